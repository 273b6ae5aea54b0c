"""include.runtime.llm_client and the LLM generator against a real HTTP server on loopback."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from include.models.insights import LLMGenerator
from include.runtime.llm_client import AllKeysExhausted, ChatClient, KeyPool, LLMRequestError
from tests.integration._llm_server import ChatServer

MESSAGES = [{"role": "user", "content": json.dumps({"orders": 5, "spend": 12.5})}]


def _client(server: ChatServer, keys, sleeps=None, **kwargs) -> ChatClient:
    return ChatClient(server.base_url, keys, "test-model", timeout=5, backoff_cap=0.0,
                      sleep=(sleeps.append if sleeps is not None else lambda s: None), **kwargs)


def test_answers_with_the_first_key():
    with ChatServer() as server, _client(server, ["k1", "k2"]) as client:
        reply = json.loads(client.complete(MESSAGES))
    assert reply == {"summary": "5 orders, 12.50 spent.", "tips": ["Try nothing new.", "Order on a fixed day."]}
    (request,) = server.requests
    assert request["key"] == "k1" and request["payload"]["model"] == "test-model"
    assert request["payload"]["messages"] == MESSAGES


def test_rate_limit_rotates_to_the_next_key_and_stays_there():
    sleeps = []
    with ChatServer({"k1": [429]}) as server, _client(server, ["k1", "k2"], sleeps) as client:
        for _ in range(3):
            client.complete(MESSAGES)
    assert server.keys_used() == ["k1", "k2", "k2", "k2"]
    assert client.pool.rate_limits == 1 and not client.pool.exhausted and sleeps == []


def test_a_single_key_waits_and_retries_after_a_rate_limit():
    sleeps = []
    with ChatServer({"k1": [429, 429, 200]}) as server, _client(server, ["k1"], sleeps) as client:
        client.complete(MESSAGES)
        assert client.pool.strikes == [0]  # a success clears the strikes
    assert server.keys_used() == ["k1", "k1", "k1"] and len(sleeps) == 2


def test_keys_that_keep_rate_limiting_or_are_refused_are_exhausted():
    sleeps = []
    with ChatServer({"k1": [429], "k2": [402], "k3": [429]}) as server, \
            _client(server, ["k1", "k2", "k3"], sleeps, max_rate_limits=2) as client:
        with pytest.raises(AllKeysExhausted, match="all 3 API keys are exhausted"):
            client.complete(MESSAGES)
        with pytest.raises(AllKeysExhausted):  # and it stays so: no further request is sent
            client.complete(MESSAGES)
    assert server.keys_used() == ["k1", "k2", "k3", "k1", "k3"]
    assert client.pool.exhausted == {0, 1, 2} and len(sleeps) == 1


def test_other_failures_fail_one_request_only():
    with ChatServer({"k1": [500, 500, 500, 200]}) as server, _client(server, ["k1"], retries=2) as client:
        with pytest.raises(LLMRequestError, match="HTTP 500 .* after 3 attempts"):
            client.complete(MESSAGES)
        assert client.complete(MESSAGES)  # the next request goes through
    with ChatServer({"k1": [400]}) as server, _client(server, ["k1"]) as client:
        with pytest.raises(LLMRequestError, match="HTTP 400"):
            client.complete(MESSAGES)
    assert not client.pool.exhausted
    with ChatServer() as server:
        client = ChatClient(server.base_url + "/missing", ["k1"], "m", timeout=5)
        with pytest.raises(LLMRequestError, match="HTTP 404"):
            client.complete(MESSAGES)
        client.close()
    client = ChatClient(server.base_url, ["k1"], "m", timeout=1, retries=1, sleep=lambda s: None)  # server gone
    with pytest.raises(LLMRequestError, match="ConnectError"):
        client.complete(MESSAGES)
    client.close()


def test_key_pool_needs_keys():
    with pytest.raises(ValueError, match="at least one API key"):
        KeyPool(["", None])


def _stats() -> pd.DataFrame:
    rows = []
    for customer_id in (1, 2, 3):
        rows.append({"customer_id": customer_id, "orders": 5, "spend": 50.0, "items": 5, "products": 3,
                     "categories": 1, "days_since_last_order": 1, "gaps": 4, "gap_days_sum": 20,
                     "gap_days_sq_sum": 100, "category": "toys", "category_orders": 5, "category_items": 5,
                     "category_spend": 50.0})
    return pd.DataFrame(rows)


def test_llm_generator_over_http_validates_replies_and_stops_when_keys_run_out():
    replies = iter(['{"summary": "fine", "tips": ["one"]}', "I cannot do that", '{"summary": "", "tips": ["x"]}'])
    with ChatServer(reply=lambda facts: next(replies)) as server, _client(server, ["k1"]) as client:
        out = LLMGenerator(client.complete, abort_on=(AllKeysExhausted,)).generate(_stats())
    assert out["summary"].tolist() == ["fine", None, None]
    assert "not JSON" in out["error"][1] and "non-empty string" in out["error"][2]

    with ChatServer({"k1": [200, 429], "k2": [429]}) as server, _client(server, ["k1", "k2"]) as client:
        with pytest.raises(AllKeysExhausted):
            LLMGenerator(client.complete, abort_on=(AllKeysExhausted,)).generate(_stats())
    assert server.keys_used()[0] == "k1" and len(server.requests) == 1 + 3 * 2

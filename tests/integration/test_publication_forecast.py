"""Staged publication of forecast_worker: keys a reader uses change only after validation passed,
and then one SET at a time (old value to new, never missing)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate

AS_OF = "2024-06-02"
FAIL_VALIDATION = {"FORECAST_MAX_FAILURE_RATE": "-1"}  # no failure rate passes: validate fails every run


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=200, products=50, start="2022-06-06", end="2024-06-03", seed=31)
    load_source(database, data.orders, data.products, data.customers)
    return data


def _run(dag_runner, conf: dict, env: dict | None = None):
    return dag_runner("forecast_worker", {"as_of_date": AS_OF, **conf}, env=env)


def _ok(out) -> None:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def _snapshot(client) -> tuple[float, dict[bytes, tuple[bytes, int]]]:
    """When, and every key's value and remaining TTL in milliseconds."""
    keys = sorted(client.scan_iter("*"))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.pttl(key)
    replies = pipe.execute()
    return time.monotonic(), dict(zip(keys, zip(replies[::2], replies[1::2])))


def test_a_run_failing_validation_leaves_every_key_as_it_was(dag_runner, redis_client, data):
    _ok(_run(dag_runner, {"shard_count": 2}))
    taken, before = _snapshot(redis_client)
    assert sum(key.startswith(b"forecast:") for key in before) > 20 and b"forecast:metadata:last_run" in before

    out = _run(dag_runner, {"shard_count": 2}, env=FAIL_VALIDATION)
    assert out.returncode != 0 and "failed" in out.stdout + out.stderr
    now, after = _snapshot(redis_client)
    assert after.keys() == before.keys()
    elapsed_ms = (now - taken) * 1000
    for key, (value, ttl) in before.items():
        assert after[key][0] == value, key
        assert after[key][1] == pytest.approx(ttl - elapsed_ms, abs=1000), key  # not rewritten: still counting down


def test_readers_never_miss_a_key_during_a_rerun(dag_runner, redis_client, services, data):
    import redis

    _ok(_run(dag_runner, {"shard_count": 3}))
    keys = sorted(redis_client.scan_iter("forecast:[0-9]*"))
    before = dict(zip(keys, redis_client.mget(keys)))
    stop, misses, polls = threading.Event(), [], []

    def read() -> None:
        client = redis.from_url(services.redis_url)
        while not stop.is_set():
            misses.extend(key for key, value in zip(keys, client.mget(keys)) if value is None)
            polls.append(1)
        client.close()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        _ok(_run(dag_runner, {"shard_count": 3}))
    finally:
        stop.set()
        reader.join()
    assert len(polls) > 100 and misses == []
    generated = {key: json.loads(value)["model_metadata"]["generated_at"] for key, value in before.items()}
    assert all(json.loads(value)["model_metadata"]["generated_at"] != generated[key]
               for key, value in zip(keys, redis_client.mget(keys)))  # every key was rewritten meanwhile


def test_a_requested_product_without_a_forecast_loses_its_key_only_after_validation(dag_runner, redis_client, data):
    _ok(_run(dag_runner, {"shard_count": 2}))
    product = int(sorted(redis_client.scan_iter("forecast:[0-9]*"))[0].split(b":")[1])
    redis_client.flushdb()
    gone = 10**6  # no order lines: no forecast any more
    for key in (f"forecast:{product}", f"forecast:{gone}", "forecast:metadata:last_run"):
        redis_client.set(key, "old", ex=3600)
    conf = {"product_ids": [product, gone], "shard_count": 2}

    out = _run(dag_runner, conf, env=FAIL_VALIDATION)
    assert out.returncode != 0
    assert redis_client.mget(f"forecast:{product}", f"forecast:{gone}") == [b"old", b"old"]

    _ok(_run(dag_runner, conf))
    assert json.loads(redis_client.get(f"forecast:{product}"))["product_id"] == product
    assert redis_client.get(f"forecast:{gone}") is None
    assert redis_client.get("forecast:metadata:last_run") == b"old"  # a run for some products: not a whole run
    assert sorted(redis_client.scan_iter("forecast:*")) == sorted(
        [f"forecast:{product}".encode(), b"forecast:metadata:last_run"])

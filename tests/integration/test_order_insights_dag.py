"""order_insights under `airflow dags test` on real PostgreSQL and Redis (and a loopback LLM endpoint)."""
from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.runtime import artifacts
from tests.integration._llm_server import ChatServer, digest

AS_OF = "2024-05-31"
MIN_ORDERS = 3  # the small test data has few users with the default 5 orders in 30 days
META = "recommendations:metadata:last_run"


@pytest.fixture(scope="module")
def eligible(database) -> dict[int, int]:
    """Orders in the 30 days up to AS_OF of every active user with at least MIN_ORDERS of them."""
    data = generate(customers=300, products=60, start="2023-01-02", end="2024-06-03", seed=3)
    load_source(database, data.orders, data.products, data.customers)
    with database.conn.cursor() as cur:
        cur.execute("DELETE FROM dead_letter")
    database.conn.commit()
    until = pd.Timestamp(AS_OF) + pd.Timedelta(days=1)
    window = data.orders[(data.orders["order_date"] >= until - pd.Timedelta(days=30))
                         & (data.orders["order_date"] < until)]
    counts = window.groupby("customer_id")["order_id"].nunique()
    c = data.customers.set_index("customer_id")
    active = c[(c["is_active"] == 1) & (c["is_blocked"] == 0) & (c["deleted"] == 0)].index
    counts = counts[(counts >= MIN_ORDERS) & counts.index.isin(active)]
    assert len(counts) >= 10
    return {int(k): int(v) for k, v in counts.items()}


@pytest.fixture
def llm_connection():
    """Points the insights_llm connection at a loopback server for the DAG run; restores the environment."""
    saved = {k: os.environ.get(k) for k in ("AIRFLOW_CONN_INSIGHTS_LLM", "INSIGHTS_LLM_BACKOFF_CAP")}

    def point(server: ChatServer, keys: list[str]) -> None:
        os.environ["AIRFLOW_CONN_INSIGHTS_LLM"] = json.dumps(
            {"conn_type": "http", "host": server.base_url, "extra": {"api_keys": keys, "model": "test-model"}})
        os.environ["INSIGHTS_LLM_BACKOFF_CAP"] = "0"

    yield point
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _written(redis_client) -> list[bytes]:
    """This job's keys (other jobs' tests may share the Redis db)."""
    return list(redis_client.scan_iter("recommendations:*"))


def _keys(redis_client) -> dict[int, dict]:
    return {int(k.decode().rsplit(":", 1)[1]): json.loads(redis_client.get(k))
            for k in redis_client.scan_iter("recommendations:user:*")}


def _tasks_done(out) -> list[str]:
    """The tasks `airflow dags test` ran to the end, in order (a mapped task once)."""
    done = re.findall(r"\[DAG TEST\] end task task_id=(\w+)", out.stdout + out.stderr)
    return [t for i, t in enumerate(done) if i == 0 or done[i - 1] != t]


def _staged_runs() -> list:
    """Runs of this job whose staged digests are still on disk."""
    root = artifacts.root() / "order_insights"
    return list(root.glob("*/staged")) if root.exists() else []


def _dead_letters(database) -> dict[int, str]:
    """This job's dead letters: customer_id -> error."""
    with database.conn.cursor() as cur:
        cur.execute("SELECT input, error FROM dead_letter WHERE job_name = 'order_insights'")
        rows = cur.fetchall()
    database.conn.commit()
    return {json.loads(data)["customer_id"]: error for data, error in rows}


def test_rules_digest_for_every_eligible_user(dag_runner, redis_client, eligible):
    out = dag_runner("order_insights", {"as_of_date": AS_OF, "min_orders": MIN_ORDERS, "shard_count": 3})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # every shard staged before validation, every shard published after it, metadata last
    assert _tasks_done(out) == ["resolve_settings", "plan", "process", "validate", "publish", "finalize"]
    assert _staged_runs() == []

    docs = _keys(redis_client)
    assert set(docs) == set(eligible)
    for customer_id, doc in docs.items():
        assert set(doc) == {"summary", "tips", "generated_at", "generator"} and doc["generator"] == "rules"
        orders = eligible[customer_id]
        assert doc["summary"].startswith(f"{orders} orders in the last 30 days"), doc["summary"]
        assert 2 <= len(doc["tips"]) <= 4 and all(isinstance(t, str) and t for t in doc["tips"])
        assert any("% of your spend" in t or "spread over" in t for t in doc["tips"])
    assert any("best seller" in t for doc in docs.values() for t in doc["tips"])
    ttl = redis_client.ttl(f"recommendations:user:{min(docs)}")
    assert 86000 < ttl <= 86400

    meta = json.loads(redis_client.get(META))
    assert meta["as_of_date"] == AS_OF and meta["generator"] == "rules" and meta["dry_run"] is False
    assert meta["total_users"] == meta["successful"] == meta["keys_written"] == len(eligible)
    assert meta["failed"] == meta["keys_removed"] == 0 and meta["min_orders"] == MIN_ORDERS and meta["days"] == 30
    assert 0 < redis_client.ttl(META) <= 86400


def test_dry_run_writes_nothing(dag_runner, redis_client, eligible):
    out = dag_runner("order_insights", {"as_of_date": AS_OF, "min_orders": MIN_ORDERS, "dry_run": True,
                                        "user_ids": sorted(eligible)[:2]})
    assert out.returncode == 0, out.stderr[-3000:]
    assert _tasks_done(out)[-2:] == ["publish", "finalize"]
    assert _written(redis_client) == []


def test_llm_generator_rotates_past_a_refused_key(dag_runner, redis_client, eligible, llm_connection):
    with ChatServer({"revoked": [401]}) as server:
        llm_connection(server, ["revoked", "good"])
        out = dag_runner("order_insights", {"as_of_date": AS_OF, "min_orders": MIN_ORDERS, "generator": "llm",
                                            "limit": 5, "shard_count": 2})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    docs = _keys(redis_client)
    top5 = sorted(eligible, key=lambda c: (-eligible[c], c))[:5]
    assert set(docs) == set(top5)
    for customer_id, doc in docs.items():
        assert doc["generator"] == "llm" and doc["summary"].startswith(f"{eligible[customer_id]} orders, ")
        assert doc["tips"][1] == "Order on a fixed day."
    assert server.keys_used().count("revoked") <= 2  # once per shard, then exhausted
    assert server.keys_used().count("good") == 5
    prompt = json.loads(server.requests[-1]["payload"]["messages"][-1]["content"])
    assert {"orders", "spend", "category_shares", "suggestions", "mean_days_between_orders"} <= set(prompt)
    meta = json.loads(redis_client.get(META))
    assert meta["generator"] == "llm" and meta["successful"] == 5 and meta["llm_requests"] >= 5


def test_llm_generator_rotates_past_a_rate_limited_key(dag_runner, redis_client, eligible, llm_connection):
    with ChatServer({"limited": [429]}) as server:
        llm_connection(server, ["limited", "spare"])
        out = dag_runner("order_insights", {"as_of_date": AS_OF, "min_orders": MIN_ORDERS, "generator": "llm",
                                            "shard_count": 1})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # one 429 moves the client on at once: the limited key is not asked again while the spare one answers
    assert server.keys_used() == ["limited"] + ["spare"] * len(eligible)
    docs = _keys(redis_client)
    assert set(docs) == set(eligible)
    for customer_id, doc in docs.items():
        assert doc["generator"] == "llm" and doc["summary"].startswith(f"{eligible[customer_id]} orders, ")
    meta = json.loads(redis_client.get(META))
    assert meta["successful"] == meta["keys_written"] == len(eligible) and meta["failed"] == 0
    assert meta["llm_rate_limits"] == 1 and meta["llm_requests"] == len(eligible) + 1


def test_bad_llm_replies_fail_only_their_users(dag_runner, redis_client, database, eligible, llm_connection):
    # The prompt names no user: the server answers badly for the users with the two highest order counts.
    most, second = sorted(set(eligible.values()))[-2:]
    not_json = {c for c, n in eligible.items() if n == most}
    wrong_shape = {c for c, n in eligible.items() if n == second}
    bad = not_json | wrong_shape
    assert 0 < len(bad) <= len(eligible) // 10

    def reply(facts) -> str:
        if facts["orders"] == most:
            return "Here is your digest: keep ordering!"
        if facts["orders"] == second:
            return json.dumps({"digest": "A digest.", "advice": ["A tip."]})
        return digest(facts)

    with database.conn.cursor() as cur:
        cur.execute("DELETE FROM dead_letter")
    database.conn.commit()
    with ChatServer(reply=reply) as server:
        llm_connection(server, ["k1"])
        out = dag_runner("order_insights", {"as_of_date": AS_OF, "min_orders": MIN_ORDERS, "generator": "llm",
                                            "shard_count": 2},
                         env={"INSIGHTS_MAX_FAILURE_RATE": "0.1"})  # the few bad users are above 5% of this small set
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert len(server.requests) == len(eligible)  # a bad reply is counted, not asked again

    docs = _keys(redis_client)
    assert set(docs) == set(eligible) - bad
    assert all(doc["generator"] == "llm" and doc["summary"].startswith(f"{eligible[c]} orders, ")
               for c, doc in docs.items())
    meta = json.loads(redis_client.get(META))
    assert meta["total_users"] == len(eligible) and meta["failed"] == len(bad)
    assert meta["successful"] == meta["keys_written"] == len(eligible) - len(bad)

    letters = _dead_letters(database)
    assert set(letters) == bad
    assert all("reply is not JSON" in letters[c] for c in not_json)
    assert all("reply must be an object with keys summary and tips" in letters[c] for c in wrong_shape)


def test_all_keys_exhausted_stops_the_run_at_once(dag_runner, redis_client, eligible, llm_connection):
    redis_client.set(META, json.dumps({"as_of_date": "previous"}))
    with ChatServer({"k1": [429], "k2": [402]}) as server:
        llm_connection(server, ["k1", "k2"])
        out = dag_runner("order_insights", {"as_of_date": AS_OF, "min_orders": MIN_ORDERS, "generator": "llm",
                                            "shard_count": 1})
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "order_insights stopped: all 2 API keys are exhausted" in text
    assert len(server.requests) == 4  # k1 three 429s, k2 one 402: no retry of the failed task
    assert json.loads(redis_client.get(META)) == {"as_of_date": "previous"}
    assert _written(redis_client) == [META.encode()]
    assert "publish" not in _tasks_done(out)


def test_llm_without_connection_fails_in_plan(dag_runner, redis_client, eligible):
    assert "AIRFLOW_CONN_INSIGHTS_LLM" not in os.environ
    out = dag_runner("order_insights", {"as_of_date": AS_OF, "generator": "llm"})
    assert out.returncode != 0
    assert "needs the Airflow connection 'insights_llm'" in out.stdout + out.stderr
    assert _written(redis_client) == []


@pytest.mark.parametrize("conf, message", [
    ({"as_of_date": "2999-01-01"}, "as_of_date 2999-01-01 is in the future"),
    ({"as_of_date": "yesterday"}, "Invalid input for param as_of_date"),
    ({"min_orders": 0}, "Invalid input for param min_orders"),
    ({"generator": "gpt"}, "Invalid input for param generator"),
    ({"shard_count": 5000}, "Invalid input for param shard_count"),
    ({"user_ids": [3, 0]}, "Invalid input for param user_ids"),
    ({"user_ids": list(range(1, 10_002))}, "Invalid input for param user_ids"),
], ids=["future", "not-a-date", "zero-orders", "unknown-generator", "too-many-shards", "user-id-zero",
        "too-many-user-ids"])
def test_bad_params_are_rejected_before_any_work(dag_runner, redis_client, eligible, conf, message):
    out = dag_runner("order_insights", {"as_of_date": AS_OF, **conf})
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert _written(redis_client) == []

"""order_insights' staged publication on real PostgreSQL and Redis: a run that fails validation
changes nothing a reader sees, a rerun never leaves a key missing, a run for some user_ids changes
only theirs, and one user whose rows make the generator raise fails alone."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pandas as pd
import pytest
import redis

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.jobs import order_insights
from include.models.insights import RulesGenerator
from include.runtime import staging

AS_OF = "2024-05-31"
MIN_ORDERS = 3
CONF = {"as_of_date": AS_OF, "min_orders": MIN_ORDERS, "shard_count": 3}
META = "recommendations:metadata:last_run"


@pytest.fixture(scope="module")
def eligible(database) -> list[int]:
    """The users that get a digest as of AS_OF: active, with >= MIN_ORDERS orders in the 30 days."""
    data = generate(customers=300, products=60, start="2023-01-02", end="2024-06-03", seed=3)
    load_source(database, data.orders, data.products, data.customers)
    until = pd.Timestamp(AS_OF) + pd.Timedelta(days=1)
    window = data.orders[(data.orders["order_date"] >= until - pd.Timedelta(days=30))
                         & (data.orders["order_date"] < until)]
    counts = window.groupby("customer_id")["order_id"].nunique()
    c = data.customers.set_index("customer_id")
    active = c[(c["is_active"] == 1) & (c["is_blocked"] == 0) & (c["deleted"] == 0)].index
    users = sorted(int(k) for k in counts[(counts >= MIN_ORDERS) & counts.index.isin(active)].index)
    assert len(users) >= 10
    return users


@pytest.fixture
def published(dag_runner, redis_client, eligible):
    """A successful run's keys in place (what a later run must leave or replace)."""
    out = dag_runner("order_insights", CONF)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return redis_client


def _snapshot(client) -> tuple[dict[bytes, tuple[bytes, int]], float]:
    """Every key of the db: value and remaining TTL in ms; and when it was taken."""
    pipe = client.pipeline(transaction=False)
    keys = sorted(client.scan_iter("*"))
    for key in keys:
        pipe.get(key)
        pipe.pttl(key)
    replies = pipe.execute()
    return {k: (replies[2 * i], replies[2 * i + 1]) for i, k in enumerate(keys)}, time.monotonic()


def _untouched(before, after) -> list[bytes]:
    """The keys whose value is the same and whose TTL kept running down from `before` (within a second)."""
    (old, taken), (new, now) = before, after
    elapsed_ms = (now - taken) * 1000
    return [k for k, (value, ttl) in old.items()
            if k in new and new[k][0] == value and abs(new[k][1] - (ttl - elapsed_ms)) < 1000]


def _key(customer_id: int) -> bytes:
    return f"recommendations:user:{customer_id}".encode()


def test_failed_validation_leaves_every_key_as_it_was(dag_runner, published, database):
    before = _snapshot(published)
    assert len(before[0]) > 10 and META.encode() in before[0]
    out = dag_runner("order_insights", CONF, env={"INSIGHTS_MAX_FAILURE_RATE": "-1"})
    after = _snapshot(published)

    assert out.returncode != 0
    assert "nothing was published, every digest and the run metadata stay as they were" in out.stdout + out.stderr
    assert set(after[0]) == set(before[0])
    assert sorted(_untouched(before, after)) == sorted(before[0]), "byte-identical, TTL still running down"


def test_a_reader_never_misses_a_key_during_a_rerun(dag_runner, published, services, eligible):
    sample = [_key(c) for c in eligible[::max(1, len(eligible) // 40)]]
    before = _snapshot(published)
    stop, polls, missing = threading.Event(), [0], []

    def read() -> None:
        client = redis.from_url(services.redis_url)
        try:
            while not stop.is_set():
                missing.extend(k for k, v in zip(sample, client.mget(sample)) if v is None)
                polls[0] += 1
        finally:
            client.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        out = dag_runner("order_insights", CONF)
    finally:
        stop.set()
        reader.join(10)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert polls[0] > 100 and missing == []
    rewritten = set(sample) - set(_untouched(before, _snapshot(published)))
    assert rewritten == set(sample), "the rerun did write the keys the reader watched"


def test_user_ids_change_only_their_keys(dag_runner, published, eligible):
    chosen = eligible[:3]
    gone = next(c for c in range(1, 1000) if c not in eligible)  # no digest today: its old key is unlinked
    published.set(_key(gone), b'{"summary": "stale"}', ex=3600)
    before = _snapshot(published)
    out = dag_runner("order_insights", {**CONF, "user_ids": [*chosen, gone]})
    after = _snapshot(published)

    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert set(after[0]) == set(before[0]) - {_key(gone)}
    assert set(before[0]) - set(_untouched(before, after)) == {_key(c) for c in chosen} | {_key(gone)}
    for customer in chosen:
        value, ttl = after[0][_key(customer)]
        assert json.loads(value)["generator"] == "rules" and 86_000_000 < ttl <= 86_400_000


def test_one_raising_user_fails_alone(database, redis_client, eligible, monkeypatch):
    victim = eligible[len(eligible) // 2]
    generate_digests = RulesGenerator.generate

    def faulty(self, stats):
        if victim in set(stats["customer_id"]):
            raise RuntimeError(f"planted fault for customer {victim}")
        return generate_digests(self, stats)

    monkeypatch.setattr(RulesGenerator, "generate", faulty)
    monkeypatch.setenv("INSIGHTS_MAX_FAILURE_RATE", "0.5")
    run_key = "isolation"
    run = order_insights.InsightsRun.from_params({"as_of_date": AS_OF, "min_orders": MIN_ORDERS, "shard_count": 1},
                                                 None, dt.date.today(), run_key)
    assert order_insights.plan(run) == [{"shard": 0, "of": 1}]
    stats = order_insights.process_shard(run, 0, 1, f"{run_key}:0/1", chunk_size=7)

    assert stats["users"] == len(eligible), "every planned user counts in the failure rate"
    assert stats["failed"] == 1 and stats["successful"] == stats["staged"] == len(eligible) - 1
    assert list(redis_client.scan_iter("recommendations:*")) == [], "process writes no key a reader uses"
    staged = set(staging.load(order_insights.JOB, run_key, 0, 1)["key"])
    assert staged == {_key(c).decode() for c in eligible if c != victim}

    with database.conn.cursor() as cur:
        cur.execute("SELECT input, error, stack_trace FROM dead_letter WHERE job_name = 'order_insights' "
                    "AND job_id = %s", (f"{run_key}:0/1",))
        letters = cur.fetchall()
    database.conn.commit()
    assert len(letters) == 1
    data, error, trace = letters[0]
    assert json.loads(data)["customer_id"] == victim
    assert error == f"RuntimeError: planted fault for customer {victim}"
    assert "Traceback" in trace and "in faulty" in trace and "planted fault" in trace

    summary = order_insights.validate(run, [stats])
    published = [order_insights.publish_shard(run, 0, 1)]
    meta = order_insights.finalize(run, summary, published, None)
    assert {int(k.decode().rsplit(":", 1)[1]) for k in redis_client.scan_iter("recommendations:user:*")} == (
        set(eligible) - {victim})
    assert meta["failed"] == 1 and meta["keys_written"] == len(eligible) - 1
    assert json.loads(redis_client.get(META))["failed"] == 1
    assert not staging.path(order_insights.JOB, run_key, 0, 1).exists(), "finalize discards the staged digests"

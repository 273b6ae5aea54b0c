"""weekly_recs' staged publication on real PostgreSQL and Redis: a run that fails validation
changes no key, no TTL and no backup row; a reader never sees a key go missing while a run
publishes; the backup table restores every key; one customer that fails is isolated.
(forecast_worker, order_insights and the event jobs: test_publication_<job>.py.)"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from tests.conftest import ROOT

AS_OF, WEEK = "2024-06-02", "2024-W22"


@pytest.fixture(scope="module")
def data(database):
    # 3,200 customers (about 2,260 active): one shard's first batch of 2,000 is full (the isolation test)
    data = generate(customers=3_200, products=120, start="2023-06-05", end="2024-06-04", seed=15,
                    views_per_purchase=0.0, carts_per_purchase=0.0)
    load_source(database, data.orders, data.products, data.customers)
    return data


def snapshot(client, pattern: str = "*") -> dict[bytes, tuple[bytes, int]]:
    """Every key with its value and its absolute expiry (EXPIRETIME: the TTL's clock, not its reading)."""
    keys = sorted(client.scan_iter(pattern, count=10_000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.execute_command("EXPIRETIME", key)
    replies = pipe.execute()
    return {k: (replies[2 * i], replies[2 * i + 1]) for i, k in enumerate(keys)}


def digest(snap: dict) -> str:
    return hashlib.sha256(repr(sorted(snap.items())).encode()).hexdigest()


def backup_rows(database, week: str) -> pd.DataFrame:
    with database.conn.cursor() as cur:
        cur.execute('SELECT * FROM "WeeklyRecommendation" WHERE "Week" = %s ORDER BY "CustomerID", "Rank"', (week,))
        rows, names = cur.fetchall(), [d[0] for d in cur.description]
    database.conn.commit()
    return pd.DataFrame(rows, columns=names)


@pytest.fixture(scope="module")
def published(data, airflow_home, database, services):
    """One successful run of the week: the state every failing run must leave as it found it."""
    import redis

    from tests.conftest import run_dag

    client = redis.from_url(services.redis_url)
    client.flushdb()
    out = run_dag("weekly_recs", {"as_of_date": AS_OF, "shard_count": 3})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client.close()


@pytest.mark.parametrize("env, reason", [
    ({"RECS_MIN_COVERAGE": "1.01"}, "validation failed (coverage"),
    ({"RECS_MAX_FAILURE_RATE": "-1"}, "failure_rate"),
], ids=["coverage", "failure-rate"])
def test_a_run_that_fails_validation_changes_nothing_a_reader_sees(published, dag_runner, database, services,
                                                                   env, reason):
    import redis

    client = redis.from_url(services.redis_url)
    before, rows = snapshot(client), backup_rows(database, WEEK)
    assert len(before) > 2_000 and len(rows) == 25 * (len(before) - 2)  # the week's keys + pointer + metadata
    time.sleep(1.1)  # a key rewritten now would get a later expiry
    out = dag_runner("weekly_recs", {"as_of_date": AS_OF, "shard_count": 2}, env=env)
    assert out.returncode != 0 and reason in out.stdout + out.stderr
    after = snapshot(client)
    assert digest(after) == digest(before), "a key, value or expiry changed"
    pd.testing.assert_frame_equal(backup_rows(database, WEEK), rows)
    client.close()


def test_a_reader_never_sees_a_key_missing_while_a_run_publishes(published, dag_runner, services):
    import redis

    client = redis.from_url(services.redis_url)
    sample = [k for k in sorted(client.scan_iter(f"{WEEK}:*"))][::50]
    missing, reads, stop = [], [0], threading.Event()

    def read() -> None:
        reader = redis.from_url(services.redis_url)
        while not stop.is_set():
            for key, value in zip(sample, reader.mget(sample)):
                reads[0] += 1
                if value is None:
                    missing.append(key)
        reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        out = dag_runner("weekly_recs", {"as_of_date": AS_OF, "shard_count": 4})
    finally:
        stop.set()
        thread.join()
    assert out.returncode == 0, out.stderr[-3000:]
    assert reads[0] > 10 * len(sample) and not missing
    docs = [json.loads(v) for v in client.mget(sample)]
    assert all(d["week"] == WEEK and len(d["recommendations"]) == 25 for d in docs)
    client.close()


def test_restore_rewrites_every_key_from_the_backup_table(published, services, database):
    import redis

    client = redis.from_url(services.redis_url)
    before = snapshot(client, f"{WEEK}:*")
    client.flushdb()
    out = subprocess.run([sys.executable, "-m", "scripts.restore", "weekly_recs", "--week", WEEK],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["keys_written"] == len(before) and result["expired_customers"] == 0
    after = snapshot(client, f"{WEEK}:*")
    assert after.keys() == before.keys()
    assert all(after[k][0] == before[k][0] for k in before), "restored values differ from the published ones"
    assert all(abs(after[k][1] - before[k][1]) <= 1 for k in before), "restored expiry differs"


def test_one_customer_that_raises_is_isolated_and_dead_lettered(published, database, services, monkeypatch):
    import redis

    from include.jobs import weekly_recs as job
    from include.models.recommender import HybridRecommender
    from include.runtime import staging

    run = job.RecsRun.from_params({"as_of_date": AS_OF, "shard_count": 1}, None, pd.Timestamp.now().date(),
                                  "isolation")
    model_dir = job.prepare(run)["model_dir"]
    with database.conn.cursor() as cur:
        cur.execute("DELETE FROM dead_letter")
    database.conn.commit()
    first_batch = sorted(_active_ids(run))[:2_000]
    culprit = first_batch[1234]
    recommend = HybridRecommender.recommend

    def raises_for_one(self, orders, customer_ids, as_of):
        if culprit in set(customer_ids.tolist()):
            raise ValueError(f"customer {culprit}: a history the model cannot score")
        return recommend(self, orders, customer_ids, as_of)

    monkeypatch.setattr(HybridRecommender, "recommend", raises_for_one)
    stats = job.process_shard(run, {"shard": 0, "of": 1, "max_customer": 2**62}, model_dir)
    assert stats["failed"] == 1 and stats["successful"] == stats["customers"] - 1 >= 2_000
    staged = staging.load(job.JOB, run.run_key, 0, 1)
    assert set(first_batch) - set(staged["CustomerID"]) == {culprit}
    with database.conn.cursor() as cur:
        cur.execute("SELECT job_name, error, stack_trace, input FROM dead_letter")
        letters = cur.fetchall()
    database.conn.commit()
    assert len(letters) == 1
    name, error, trace, payload = letters[0]
    assert name == "weekly_recs" and "cannot score" in error and json.loads(payload)["customer_id"] == culprit
    assert "Traceback" in trace and "raises_for_one" in trace

    client = redis.from_url(services.redis_url)
    published = job.publish_shard(run, {"shard": 0, "of": 1})
    assert published["keys_written"] == stats["customers"] - 1
    # the week now holds what this run computed: the culprit waits in dead_letter for its re-drive
    assert client.get(f"{WEEK}:{culprit}") is None and client.get(f"{WEEK}:{first_batch[0]}") is not None
    client.close()


def _active_ids(run) -> list[int]:
    from include.runtime.config import SOURCE_CONN_ID
    from include.runtime.database import Database

    with Database(SOURCE_CONN_ID) as db:
        return db.frame("active_customers", run.query_params())["customer_id"].astype("int64").tolist()


def test_real_failures_trip_the_failure_rate_and_coverage_gates(published, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from include.jobs import weekly_recs as job
    from include.models.recommender import HybridRecommender

    run = job.RecsRun.from_params({"as_of_date": AS_OF, "shard_count": 2}, None, pd.Timestamp.now().date(), "gates")
    model_dir = job.prepare(run)["model_dir"]
    recommend, active = HybridRecommender.recommend, sorted(_active_ids(run))
    broken = set(active[:len(active) // 12])  # 8% of the customers: above the 5% failure limit

    def some_raise(self, orders, customer_ids, as_of):
        if broken & set(customer_ids.tolist()):
            raise ArithmeticError("a history the model cannot score")
        return recommend(self, orders, customer_ids, as_of)

    monkeypatch.setattr(HybridRecommender, "recommend", some_raise)
    stats = [job.process_shard(run, d, model_dir) for d in job.plan(run)]
    assert sum(s["failed"] for s in stats) == len(broken) and sum(s["customers"] for s in stats) == len(active)
    with pytest.raises(AirflowFailException, match=r"validation failed \(coverage, failure_rate\)"):
        job.validate(run, stats)

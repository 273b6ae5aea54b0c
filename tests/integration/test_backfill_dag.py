"""The backfill DAG on real PostgreSQL and Redis. A backfill triggers the job's own DAG runs, so
everything that runs a date needs a real scheduler: those tests share one cluster (scheduler,
dag-processor, API server, LocalExecutor; tests/e2e/cluster.py) with a Redis server of its own.
A conf with a mistake, and a dry run, trigger nothing and run with `airflow dags test`."""
from __future__ import annotations

import json
import signal
import threading

import pandas as pd
import psycopg
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from tests.e2e.cluster import ROOT, active_customers, blocked_shard, process_on_port, running_cluster

AS_OF, WEEK = "2024-06-02", "2024-W22"
JOB_DAGS = ("weekly_recs", "forecast_worker", "user_affinity", "popularity", "cf_training")
LOCAL_SETTINGS = '''\
import datetime as dt


def task_policy(task):
    """Test only: a retry after 1 s instead of 1 minute."""
    task.retry_delay = dt.timedelta(seconds=1)
    task.retry_policy = None
'''


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=200, products=50, start="2023-01-02", end="2024-06-10", seed=7)
    load_source(database, data.orders, data.products, data.customers, data.events)
    return data


@pytest.fixture(scope="module")
def cluster(services, database, data, tmp_path_factory):
    config = tmp_path_factory.mktemp("backfill-config")
    (config / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    dag_files = {d: ROOT / "dags" / f"{d}.py" for d in ("backfill", *JOB_DAGS)}
    with running_cluster(services, "backfill", dag_files, pythonpath=(config,),
                         env={"AIRFLOW__CORE__PARALLELISM": "3"}) as cluster:
        yield cluster


def _sql(database, statement: str, params: tuple = ()) -> list[tuple]:
    with database.conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
    database.conn.commit()
    return rows


def _report(database, run_id: str) -> pd.DataFrame:
    rows = _sql(database, "SELECT as_of, succeeded, failed, skipped, detail FROM backfill_report "
                          "WHERE run_id = %s ORDER BY as_of", (run_id,))
    return pd.DataFrame(rows, columns=["as_of", "succeeded", "failed", "skipped", "detail"])


def _trigger(cluster, dag_id: str, conf: dict) -> str:
    status, body = cluster.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200, body
    return body["dag_run_id"]


def _finished(cluster, dag_id: str, run_id: str) -> str:
    def state():
        status, body = cluster.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return body["state"] if status == 200 and body["state"] in ("success", "failed") else None

    return cluster.wait_for(f"{dag_id} run {run_id}", state)


def _redis(cluster):
    import redis

    return redis.from_url(cluster.redis_url)


def test_a_backfill_of_the_live_week_keeps_every_key_and_retries_a_killed_shard(cluster, services, database, data):
    client = _redis(cluster)
    client.flushdb()
    live = _trigger(cluster, "weekly_recs", {"as_of_date": AS_OF, "shard_count": 2})
    assert _finished(cluster, "weekly_recs", live) == "success", cluster.logs()
    active = active_customers(data, AS_OF)
    before = {k: client.get(k) for k in client.scan_iter(f"{WEEK}:*")}
    assert {int(k.decode().split(":")[1]) for k in before} == active and client.get("recs:current_week") == WEEK.encode()

    sample, missing, reads, stop = sorted(before)[::5], [], [0], threading.Event()

    def read() -> None:
        reader = _redis(cluster)
        while not stop.is_set():
            for key, value in zip(sample, reader.mget(sample)):
                reads[0] += 1
                if value is None:
                    missing.append(key)
        reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    lock = psycopg.connect(services.postgres_url)
    lock.execute('LOCK TABLE "WeeklyRecommendation" IN SHARE MODE')  # the publish shards wait at their delete
    try:
        backfill = _trigger(cluster, "backfill", {"job": "weekly_recs", "start_date": "2024-05-27", "end_date": AS_OF})
        with psycopg.connect(services.postgres_url, autocommit=True) as admin:
            port, _ = cluster.wait_for("a publish shard blocked on its backup rows", lambda: blocked_shard(admin),
                                       every=0.5)
        victim = process_on_port(port)
        assert victim is not None and "airflow worker --" in " ".join(victim.cmdline())
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        lock.rollback()
        lock.close()
    try:
        assert _finished(cluster, "backfill", backfill) == "success", cluster.logs()
    finally:
        stop.set()
        thread.join()
    assert reads[0] > len(sample) and not missing, f"{len(missing)} reads found a key missing"

    job_run = f"backfill__{backfill}__{AS_OF}"
    status, body = cluster.request("GET", f"/api/v2/dags/weekly_recs/dagRuns/{job_run}")
    assert status == 200 and body["state"] == "success" and body["conf"] == {"as_of_date": AS_OF, "week": WEEK}
    status, body = cluster.request("GET", f"/api/v2/dags/weekly_recs/dagRuns/{job_run}/taskInstances?task_id=publish")
    tries = sorted(ti["try_number"] for ti in body["task_instances"] if ti["task_id"] == "publish")
    assert tries.count(2) == 1 and set(tries) == {1, 2}, f"the killed shard ran twice, the others once: {tries}"
    assert {int(k.decode().split(":")[1]) for k in client.scan_iter(f"{WEEK}:*")} == active
    assert client.get("recs:current_week") == WEEK.encode()
    rows = _sql(database, 'SELECT count(*), count(DISTINCT "CustomerID") FROM "WeeklyRecommendation" '
                          'WHERE "Week" = %s', (WEEK,))
    assert rows == [(25 * len(active), len(active))]
    report = _report(database, backfill)
    assert report[["succeeded", "failed", "skipped"]].values.tolist() == [[len(active), 0, 0]]
    assert json.loads(report["detail"].iloc[0])["run_id"] == job_run
    client.close()


def test_weekly_recs_for_some_customers_keeps_the_pointer_and_the_others(cluster, database, data):
    client = _redis(cluster)
    both = active_customers(data, AS_OF) & active_customers(data, "2024-06-09")
    inactive = sorted(set(data.customers["customer_id"]) - active_customers(data, AS_OF)
                      - active_customers(data, "2024-06-09"))
    chosen, other = sorted(both)[:3], sorted(both)[3]
    client.set("recs:current_week", "2024-W30")
    client.set(f"2024-W23:{inactive[0]}", "stale")  # must go: the customer now gets nothing
    client.set(f"2024-W23:{other}", "not targeted")

    backfill = _trigger(cluster, "backfill", {"job": "weekly_recs", "start_date": "2024-06-03",
                                              "end_date": "2024-06-09", "user_ids": chosen + [inactive[0]]})
    assert _finished(cluster, "backfill", backfill) == "success", cluster.logs()
    keys = {int(k.decode().split(":")[1]) for k in client.scan_iter("2024-W23:*")}
    assert keys == set(chosen) | {other}
    assert client.get(f"2024-W23:{other}") == b"not targeted"
    doc = json.loads(client.get(f"2024-W23:{chosen[0]}"))
    assert doc["week"] == "2024-W23" and len(doc["recommendations"]) == 25
    assert client.get("recs:current_week") == b"2024-W30"
    report = _report(database, backfill)
    assert report[["succeeded", "failed", "skipped"]].values.tolist() == [[3, 0, 1]]
    client.close()


def test_a_forecast_date_that_fails_validation_publishes_nothing_and_fails_the_backfill(cluster, database, data):
    client = _redis(cluster)
    counts = data.orders.groupby("product_id")["order_id"].nunique().sort_values(ascending=False)
    good, bad = [int(p) for p in counts.index[1:3]], int(counts.index[0])
    for p in good + [bad]:
        client.set(f"forecast:{p}", "previous")
    line = int(_sql(database, 'SELECT max("ID") FROM "OrderItem"')[0][0]) + 1
    _sql(database, 'INSERT INTO "OrderItem" ("ID", "OrderID", "ProductID", "Quantity", "Price") '
                   "VALUES (%s, %s, %s, 'Infinity', 1.0)", (line, int(data.orders["order_id"].iloc[0]), bad))
    # the infinite line reaches the engine only without the quantity rule: 1 of 3 products fails
    assert cluster.airflow("variables", "set", "SOURCE_MAX_QUANTITY", "inf").returncode == 0
    try:
        backfill = _trigger(cluster, "backfill", {"job": "forecast_worker", "start_date": AS_OF, "end_date": AS_OF,
                                                  "product_ids": good + [bad]})
        state = _finished(cluster, "backfill", backfill)
    finally:
        _sql(database, 'DELETE FROM "OrderItem" WHERE "ID" = %s', (line,))
        cluster.airflow("variables", "delete", "SOURCE_MAX_QUANTITY")
    assert state == "failed"
    assert all(client.get(f"forecast:{p}") == b"previous" for p in good + [bad]), "a failed date published"
    report = _report(database, backfill)
    assert report[["succeeded", "failed"]].values.tolist() == [[0, 3]]
    assert "ended failed" in json.loads(report["detail"].iloc[0])["error"]
    client.close()


def test_user_affinity_features_for_some_users_leave_the_watermark(cluster, database, data):
    from include.jobs import user_affinity

    client = _redis(cluster)
    users = sorted(data.events["user_id"].value_counts().index[:3].astype(int).tolist())
    before = user_affinity.read_watermark()
    backfill = _trigger(cluster, "backfill", {"job": "user_affinity", "start_date": AS_OF, "end_date": AS_OF,
                                              "user_ids": users, "features": ["affinity"]})
    assert _finished(cluster, "backfill", backfill) == "success", cluster.logs()
    assert {int(k.decode().rsplit(":", 1)[1]) for k in client.scan_iter("affinity:user:*")} == set(users)
    assert _sql(database, "SELECT user_id FROM user_profiles WHERE user_id = ANY(%s)", (users,)) == []
    assert user_affinity.read_watermark() == before
    assert _report(database, backfill)[["succeeded", "failed"]].values.tolist() == [[3, 0]]
    client.close()


@pytest.mark.parametrize("job", ["popularity", "cf_training"])
def test_whole_run_jobs_run_each_date_and_report_it(cluster, database, data, job):
    backfill = _trigger(cluster, "backfill", {"job": job, "start_date": "2024-06-08", "end_date": "2024-06-09"})
    assert _finished(cluster, "backfill", backfill) == "success", cluster.logs()
    assert _report(database, backfill)[["succeeded", "failed", "skipped"]].values.tolist() == [[1, 0, 0]] * 2
    status, body = cluster.request("GET", f"/api/v2/dags/{job}/dagRuns/backfill__{backfill}__2024-06-09")
    assert status == 200 and body["state"] == "success"
    if job == "cf_training":
        assert body["conf"]["shadow"] is True  # a past date never promotes


def test_dry_run_triggers_nothing_and_says_what_would_run(dag_runner, database, redis_client, data):
    reported = len(_sql(database, "SELECT as_of FROM backfill_report"))
    users = sorted(data.orders["customer_id"].value_counts().index[:3].astype(int).tolist())
    out = dag_runner("backfill", {"job": "order_insights", "start_date": "2024-06-01", "end_date": AS_OF,
                                  "user_ids": users, "dry_run": True})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "dry run: would trigger order_insights run" in log
    assert "backfill order_insights 2024-06-01..2024-06-02 succeeded (dry run, nothing written)" in log
    assert list(redis_client.scan_iter("*")) == []
    assert len(_sql(database, "SELECT as_of FROM backfill_report")) == reported


_FORECAST = {"job": "forecast_worker", "start_date": AS_OF, "end_date": AS_OF}


@pytest.mark.parametrize("conf, message", [
    ({"start_date": "2024-06-09"}, "start_date 2024-06-09 is after end_date 2024-06-02; swap them"),
    ({"end_date": "2999-01-01"}, "end_date 2999-01-01 is in the future"),
    ({"start_date": "2024-01-01"}, "2024-01-01..2024-06-02 spans 154 days, more than BACKFILL_MAX_DAYS (92)"),
    ({"job": "nightly_magic"}, "Invalid input for param job"),
    ({"user_ids": [1, 2]}, "job forecast_worker takes no user_ids"),
    ({"job": "popularity", "product_ids": [1]}, "job popularity takes no product_ids"),
    ({"product_ids": [1, 2, 99999, 123456]}, "2 of the 4 product_ids do not exist in Product: [99999, 123456]"),
    ({"product_ids": list(range(1, 10_002))}, "Invalid input for param product_ids"),
    ({"start_date": "2024-13-45"}, "Invalid input for param start_date"),
    ({"job": "weekly_recs", "features": ["affinity"]}, "job weekly_recs has no features to pick"),
], ids=["start-after-end", "future-end", "span", "unknown-job", "user-ids-for-products", "ids-for-whole-job",
        "nonexistent-ids", "too-many-ids", "malformed-date", "features-of-other-job"])
def test_bad_conf_fails_with_one_message_and_triggers_nothing(dag_runner, database, redis_client, data, conf,
                                                              message):
    reported = len(_sql(database, "SELECT as_of FROM backfill_report"))
    out = dag_runner("backfill", {**_FORECAST, **conf})
    assert out.returncode != 0 and message in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    assert len(_sql(database, "SELECT as_of FROM backfill_report")) == reported
    assert list(redis_client.scan_iter("*")) == []

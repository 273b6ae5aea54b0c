"""The real thing: scheduler, dag-processor and API server with a LocalExecutor, runs triggered
through the REST API with conf (weekly_recs, forecast_worker, and a backfill of an earlier week
for some customers), results checked in Redis and PostgreSQL, metrics read from the StatsD
packets Airflow sent to a UDP socket the test owns.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.e2e.cluster import AS_OF, ROOT, TIMEOUT, WEEK, active_customers, running_cluster
from tests.statsd_sink import UdpSink

DAGS = ("weekly_recs", "forecast_worker")
BACKFILL_WEEK, BACKFILL_START, BACKFILL_END = "2024-W21", "2024-05-20", "2024-05-26"


@pytest.fixture(scope="module")
def cluster(services, database, data):
    dag_files = {dag_id: ROOT / "dags" / f"{dag_id}.py" for dag_id in (*DAGS, "backfill")}
    dag_files["deadline_probe"] = ROOT / "tests" / "e2e" / "dags" / "deadline_probe.py"
    sink = UdpSink()
    try:
        with running_cluster(services, "e2e", dag_files, triggerer=True, env={
                "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(sink.port)}) as cluster:
            cluster.sink = sink
            yield cluster
    finally:
        sink.close()


@pytest.fixture
def e2e_redis(cluster):
    import redis

    client = redis.from_url(cluster.redis_url)
    yield client
    client.close()


def test_runs_triggered_through_the_rest_api(cluster, e2e_redis, database, data):
    redis_client = e2e_redis
    # A bad Param is refused with 400 before any run exists.
    status, body = cluster.request("POST", "/api/v2/dags/weekly_recs/dagRuns",
                                   {"logical_date": None, "conf": {"week": "June"}})
    assert status == 400, body

    runs = {}
    for dag_id, conf in (("weekly_recs", {"as_of_date": AS_OF, "week": WEEK, "shard_count": 2}),
                         ("forecast_worker", {"as_of_date": AS_OF, "shard_count": 2, "limit": 20})):
        status, body = cluster.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        assert status == 200, body
        assert body["conf"] == conf
        runs[dag_id] = body["dag_run_id"]

    status, body = cluster.request("POST", "/api/v2/dags/deadline_probe/dagRuns", {"logical_date": None, "conf": {}})
    assert status == 200, body

    def finished(dag_id: str):
        status, body = cluster.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{runs[dag_id]}")
        if status == 200 and body["state"] in ("success", "failed"):
            return body["state"]
        return None

    for dag_id in DAGS:
        state = cluster.wait_for(f"{dag_id} run {runs[dag_id]}", lambda d=dag_id: finished(d))
        assert state == "success", f"{dag_id} ended {state}\n{cluster.logs()}"

    # Deadline Alert: the probe's run outlived its 2 s deadline; the triggerer ran the callback.
    cluster.wait_for("the deadline_missed metric", lambda: cluster.sink.values(
        "airflow.nightshift.job.deadline_probe.deadline_missed"), timeout=120, every=1)
    status, body = cluster.request("GET", "/api/v2/dags/weekly_recs")
    assert status == 200

    # Results: Redis and PostgreSQL.
    active = active_customers(data, AS_OF)
    assert redis_client.get("recs:current_week") == WEEK.encode()
    meta = json.loads(redis_client.get("recs:metadata:last_run"))
    assert meta["week"] == WEEK and meta["processed"] == len(active) and meta["failed"] == 0
    keys = {int(k.decode().split(":")[1]) for k in redis_client.scan_iter(f"{WEEK}:*")}
    assert keys == active
    with database.conn.cursor() as cur:
        cur.execute('SELECT COUNT(DISTINCT "CustomerID"), COUNT(*) FROM "WeeklyRecommendation" WHERE "Week" = %s',
                    (WEEK,))
        customers, rows = cur.fetchone()
    database.conn.commit()
    assert customers == len(active) and rows == 25 * len(active)
    forecast = json.loads(redis_client.get("forecast:metadata:last_run"))
    assert forecast["as_of_date"] == AS_OF and forecast["total_products"] == 20
    status, variable = cluster.request("GET", "/api/v2/variables/nightshift_job_state_weekly_recs")
    assert status == 200, variable
    state = json.loads(variable["value"])
    assert state["consecutive_failures"] == 0 and state["last_status"] == "success" and state["records"] == len(active)

    # Metrics: the project's own and Airflow's, as the StatsD packets arrived.
    sink = cluster.sink
    cluster.wait_for("the dagrun duration metrics",
                     lambda: {f"airflow.dagrun.duration.success.{d}" for d in DAGS} <= sink.names(), timeout=60, every=1)
    for job in DAGS:
        assert sink.values(f"airflow.nightshift.job.{job}.runs.success") == [(1.0, "c")]
        assert [kind for _, kind in sink.values(f"airflow.nightshift.job.{job}.duration")] == ["ms"]
        assert sink.values(f"airflow.nightshift.job.{job}.consecutive_failures") == [(0.0, "g")]
        (last_success, kind), = sink.values(f"airflow.nightshift.job.{job}.last_success")
        assert kind == "g" and abs(last_success - time.time()) < TIMEOUT + 120
    assert sink.values("airflow.nightshift.job.weekly_recs.records_processed") == [(float(len(active)), "g")]
    assert sink.values("airflow.nightshift.job.forecast_worker.records_processed") == [(20.0, "g")]
    assert sink.values("airflow.nightshift.quality.weekly_recs.coverage") == [(1.0, "g")]
    assert sink.values("airflow.nightshift.dq.weekly_recs.coverage.pass") == [(1.0, "c")]
    assert sink.values("airflow.nightshift.dq.forecast_worker.failure_rate.pass") == [(1.0, "c")]
    names = sink.names()
    assert {"airflow.ti.finish.weekly_recs.publish.success", "airflow.dag.weekly_recs.publish.duration"} <= names, \
        sorted(n for n in names if "weekly_recs" in n)
    assert any(n.startswith("airflow.pool.open_slots.") for n in names), sorted(names)

    # Every name received maps to a Prometheus series through deploy/statsd/mapping.yml.
    from tests.unit.test_observability_deploy import load_mapping, map_name

    mapping = load_mapping()
    ours = {n for n in names if n.startswith("airflow.nightshift.")}
    assert ours and all(map_name(mapping, n) for n in ours), [n for n in ours if not map_name(mapping, n)]
    for name in ("airflow.dagrun.duration.success.weekly_recs", "airflow.ti.finish.weekly_recs.publish.success",
                 "airflow.dag.weekly_recs.publish.duration"):
        assert map_name(mapping, name), name

    # A backfill through the REST API: an earlier week for three customers, the pointer untouched.
    status, body = cluster.request("POST", "/api/v2/dags/backfill/dagRuns",
                                   {"logical_date": None, "conf": {"job": "weekly_recs", "start_date": "May 20"}})
    assert status == 400, body  # the Params schema refuses it before any run exists
    users = sorted(active & active_customers(data, BACKFILL_END))[:3]
    conf = {"job": "weekly_recs", "start_date": BACKFILL_START, "end_date": BACKFILL_END, "user_ids": users}
    status, body = cluster.request("POST", "/api/v2/dags/backfill/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200, body
    runs["backfill"] = body["dag_run_id"]
    state = cluster.wait_for(f"backfill run {runs['backfill']}", lambda: finished("backfill"))
    assert state == "success", f"backfill ended {state}\n{cluster.logs()}"
    keys = {int(k.decode().split(":")[1]) for k in redis_client.scan_iter(f"{BACKFILL_WEEK}:*")}
    assert keys == set(users)
    assert redis_client.get("recs:current_week") == WEEK.encode()
    with database.conn.cursor() as cur:
        cur.execute('SELECT "CustomerID", COUNT(*) FROM "WeeklyRecommendation" WHERE "Week" = %s GROUP BY 1',
                    (BACKFILL_WEEK,))
        backup = dict(cur.fetchall())
        cur.execute("SELECT as_of, succeeded, failed FROM backfill_report WHERE run_id = %s", (runs["backfill"],))
        report = cur.fetchall()
    database.conn.commit()
    assert backup == {u: 25 for u in users}
    assert [(r[1], r[2]) for r in report] == [(len(users), 0)], report

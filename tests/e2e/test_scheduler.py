"""The real thing: scheduler, dag-processor and API server with a LocalExecutor, runs triggered
through the REST API with conf, results checked in Redis and PostgreSQL, metrics read from the
StatsD packets Airflow sent to a UDP socket the test owns.

There is no backfill DAG yet: the "backfill" here is forecast_worker triggered for a past
as_of_date (and weekly_recs for a past week) with conf, which is how a rerun for another date is
done today. Every process is started in its own process group and stopped by group id in a
finally block, also when the test fails.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.runtime.services import EmbeddedRedis, fresh_database
from tests.statsd_sink import UdpSink

ROOT = Path(__file__).resolve().parents[2]
DAGS = ("weekly_recs", "forecast_worker")
AS_OF, WEEK = "2024-06-02", "2024-W22"
PASSWORD = "e2e-" + secrets.token_hex(8)
TIMEOUT = float(os.environ.get("NIGHTSHIFT_E2E_TIMEOUT", "420"))



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """scheduler + dag-processor + api-server, each in its own process group."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.port = home, env, port
        self.procs: dict[str, subprocess.Popen] = {}
        self.token: str | None = None

    def airflow(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    def start(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env, cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):  # scheduler first: no new task starts
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group too: LocalExecutor workers and API workers must not outlive the test
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(self.home.glob("*.log")))

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, {"detail": exc.read().decode(errors="replace")}

    def wait_for(self, what: str, probe, timeout: float = TIMEOUT, every: float = 2.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.logs()}")
            try:
                result = probe()
            except (urllib.error.URLError, ConnectionError, OSError):
                result = None
            if result:
                return result
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.logs()}")


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=200, products=50, start="2023-01-02", end="2024-06-03", seed=31)
    load_source(database, data.orders, data.products, data.customers)
    with database.conn.cursor() as cur:
        cur.execute('DELETE FROM "WeeklyRecommendation"')
    database.conn.commit()
    return data


@pytest.fixture(scope="module")
def cluster(services, database, data):
    work = Path(tempfile.mkdtemp(prefix="nightshift-e2e-"))
    dags = work / "dags"
    dags.mkdir()
    for dag_id in DAGS:  # only the DAGs under test: parsing stays light
        (dags / f"{dag_id}.py").symlink_to(ROOT / "dags" / f"{dag_id}.py")
    (dags / "deadline_probe.py").symlink_to(ROOT / "tests" / "e2e" / "dags" / "deadline_probe.py")
    (work / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    meta_url = fresh_database(services.postgres_url, f"nightshift_e2e_airflow_{os.getpid()}")
    port = _free_port()
    sink = UdpSink()
    # A Redis server of its own: parallel test sessions share (and flush) the Redis test dbs.
    redis_server = EmbeddedRedis(work / "redis").start()
    env = {**os.environ,
           "AIRFLOW_CONN_REDIS_DEFAULT": f"redis://127.0.0.1:{redis_server.server.port}?db=0",
           "AIRFLOW_HOME": str(work),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url.replace("postgresql://", "postgresql+psycopg://", 1),
           "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__CORE__PARALLELISM": "2",
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
           "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__API__WORKERS": "1",
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
           "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
           # only the runs the test triggers: no cron runs for the latest interval on unpause
           "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
           "AIRFLOW__METRICS__STATSD_ON": "True",
           "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
           "AIRFLOW__METRICS__STATSD_PORT": str(sink.port),
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
           "PYTHONPATH": str(ROOT)}
    cluster = Cluster(work, env, port)
    cluster.sink = sink
    cluster.redis_url = redis_server.url
    try:
        migrated = cluster.airflow("db", "migrate")
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        pool = cluster.airflow("pools", "set", "source_db_slots", "4", "source DB slots (e2e)")
        assert pool.returncode == 0, pool.stderr[-3000:]
        cluster.start("api-server", "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1")
        cluster.wait_for("the API server", lambda: cluster.request("GET", "/api/v2/monitor/health")[0] == 200,
                         timeout=180)
        # tasks report to the execution API: start the scheduler once the API server answers
        cluster.start("dag-processor", "dag-processor")
        cluster.start("scheduler", "scheduler")
        cluster.start("triggerer", "triggerer")  # runs the Deadline Alert callbacks
        status, body = cluster.request("POST", "/auth/token", {"username": "admin", "password": PASSWORD})
        assert status in (200, 201), body
        cluster.token = body["access_token"]
        for dag_id in (*DAGS, "deadline_probe"):
            cluster.wait_for(f"{dag_id} parsed", lambda d=dag_id: cluster.request("GET", f"/api/v2/dags/{d}")[0] == 200,
                             timeout=180)
        yield cluster
    finally:
        cluster.stop()
        sink.close()
        redis_server.stop()
        import psycopg

        with psycopg.connect(services.postgres_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS nightshift_e2e_airflow_{os.getpid()} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)  # logs are in the assertion messages


@pytest.fixture
def e2e_redis(cluster):
    import redis

    client = redis.from_url(cluster.redis_url)
    yield client
    client.close()


def _active(data, as_of: str) -> set[int]:
    until = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    recent = data.orders[(data.orders["order_date"] >= until - pd.Timedelta(days=90))
                         & (data.orders["order_date"] < until)]
    c = data.customers.set_index("customer_id")
    ok = c[(c["is_active"] == 1) & (c["is_blocked"] == 0) & (c["deleted"] == 0)].index
    return set(recent["customer_id"]) & set(ok)


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
    active = _active(data, AS_OF)
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

"""Job metrics as real StatsD packets: weekly_recs under `airflow dags test` sends to a UDP socket
the test owns. A success, two runs failed in resolve_settings (the on_failure_callback path), one
failed in validate (job_run("failed") and the callback: counted once), and a success again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.runtime.services import EmbeddedRedis
from tests.statsd_sink import UdpSink

AS_OF, WEEK = "2024-06-02", "2024-W22"
P = "airflow.nightshift."
STATE = "nightshift_job_state_weekly_recs"  # the Airflow Variable (JOB_STATE_KEY) in the test metadata DB


def _airflow(*args: str) -> subprocess.CompletedProcess:
    """The Airflow CLI against the metadata DB the DAG runs use (as an operator would read it)."""
    return subprocess.run([sys.executable, "-m", "airflow", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)


def _state() -> dict:
    out = _airflow("variables", "get", STATE)
    assert out.returncode == 0, out.stderr[-2000:]
    start = out.stdout.find("\n{")  # the value (indented JSON) follows any log lines
    return json.loads(out.stdout[start:] if start >= 0 else out.stdout)


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=150, products=40, start="2023-06-05", end="2024-06-03", seed=41)
    load_source(database, data.orders, data.products, data.customers)
    return data


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """A Redis server of this test's own: parallel sessions share and flush the Redis test dbs,
    and the failure counter lives across runs."""
    import redis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    client = redis.from_url(server.url)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()


@pytest.fixture
def sink():
    sink = UdpSink()
    yield sink
    sink.close()


def _run(dag_runner, sink, redis_port, conf, env=None, ok=True):
    sink.clear()
    out = dag_runner("weekly_recs", conf, env={**sink.env(), **(env or {}),
                                                "AIRFLOW_CONN_REDIS_DEFAULT": f"redis://127.0.0.1:{redis_port}?db=0"})
    assert (out.returncode == 0) == ok, out.stdout[-3000:] + out.stderr[-3000:]
    time.sleep(0.3)  # UDP: let the reader drain the socket
    return out


def _only(sink, name, kind):
    values = sink.values(P + name)
    assert len(values) == 1, (name, values, sorted(n for n in sink.names() if "nightshift" in n))
    value, got = values[0]
    assert got == kind, (name, got)
    return value


def test_runs_failures_and_recovery_as_statsd_packets(dag_runner, own_redis, data, sink):
    _airflow("variables", "delete", STATE)  # absent on a fresh metadata DB: the result is the same
    server, redis_client = own_redis
    port = server.server.port
    job = "job.weekly_recs."
    _run(dag_runner, sink, port, {"as_of_date": AS_OF, "week": WEEK, "shard_count": 2})
    customers = _only(sink, job + "records_processed", "g")
    assert customers > 20
    assert _only(sink, job + "runs.success", "c") == 1
    assert _only(sink, job + "duration", "ms") > 0
    assert abs(_only(sink, job + "last_success", "g") - time.time()) < 600
    assert _only(sink, job + "consecutive_failures", "g") == 0
    assert _only(sink, "quality.weekly_recs.coverage", "g") == 1.0
    for check in ("coverage", "failure_rate", "score_range"):
        assert _only(sink, f"dq.weekly_recs.{check}.pass", "c") == 1
    assert not sink.values(P + job + "runs.failed")

    # A run-fatal conf error in the first task: only the on_failure_callback reports it.
    for expected in (1, 2):
        _run(dag_runner, sink, port, {"as_of_date": AS_OF, "week": "2024-W99"}, ok=False)
        assert _only(sink, job + "runs.failed", "c") == 1
        assert _only(sink, job + "consecutive_failures", "g") == expected
        assert abs(_only(sink, job + "last_failure", "g") - time.time()) < 600
        assert not sink.values(P + job + "runs.success")
    assert _state()["consecutive_failures"] == 2

    # Validation fails: validate sends job_run("failed"), then the callback fires: one failure.
    _run(dag_runner, sink, port, {"as_of_date": AS_OF, "week": WEEK, "shard_count": 2},
         env={"RECS_MIN_COVERAGE": "1.01"}, ok=False)
    assert _only(sink, job + "runs.failed", "c") == 1
    assert _only(sink, job + "consecutive_failures", "g") == 3
    assert _only(sink, "dq.weekly_recs.coverage.fail", "c") == 1
    assert _only(sink, job + "records_processed", "g") == customers

    _run(dag_runner, sink, port, {"as_of_date": AS_OF, "week": WEEK, "shard_count": 2})
    assert _only(sink, job + "consecutive_failures", "g") == 0
    state = _state()
    assert state["consecutive_failures"] == 0 and state["last_status"] == "success"
    assert state["last_success"] > state["last_failure"]

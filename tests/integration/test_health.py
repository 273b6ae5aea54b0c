"""scripts.health on a real Redis: states planted as the jobs write them, exit codes a monitor reads,
and the gauges `--emit` sends as StatsD packets."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import pytest

from include.runtime.services import EmbeddedRedis
from scripts import health
from tests.statsd_sink import UdpSink

# Keys of this session's own (every key name is a setting): other test sessions share the Redis db.
PREFIX = f"health{os.getpid()}:"
NOW = dt.datetime(2025, 11, 12, 9, 0, tzinfo=dt.timezone.utc)  # a Wednesday of 2025-W46
ALL_JOBS_FRESH = {job: {"last_success": (NOW - dt.timedelta(minutes=10)).timestamp(), "consecutive_failures": 0}
                  for job in health.JOBS}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A Redis server of this module's own: parallel test sessions share and flush the test dbs."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server):
    import redis

    client = redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


def _settings(name: str) -> str:
    from include.runtime.config import DEFAULTS

    return PREFIX + DEFAULTS[name] if name.endswith("_KEY") else DEFAULTS[name]


def _key_env() -> dict[str, str]:
    from include.runtime.config import DEFAULTS

    return {name: _settings(name) for name in DEFAULTS if name.endswith("_KEY")}


def _plant(client, week="2025-W46", customers=40, failed=0, forecast_age=dt.timedelta(hours=2)):
    client.set(PREFIX + "recs:current_week", week)
    client.set(PREFIX + "recs:metadata:last_run", json.dumps({"week": week, "successful": customers,
                                                     "completed_at": (NOW - dt.timedelta(hours=3)).isoformat()}))
    for customer in range(customers):
        client.set(f"{PREFIX}{week}:{customer}", "{}")
    client.set(PREFIX + "forecast:metadata:last_run", json.dumps({
        "last_run": (NOW - forecast_age).isoformat(), "total_products": 100, "failed": failed}))


def _by_check(results):
    return {r.check: r for r in results}


def test_all_fresh_is_ok(redis_client):
    _plant(redis_client)
    results = _by_check(health.run_checks(redis_client, NOW, _settings, state=ALL_JOBS_FRESH.get))
    assert max(r.status for r in results.values()) == health.OK, [r for r in results.values() if r.status]
    assert results["week_customers"].value == 40
    assert results["forecast_failures"].value == 0.0


def test_problems_the_seeds_ask_about(redis_client):
    _plant(redis_client, week="2025-W45", customers=10, failed=7, forecast_age=dt.timedelta(days=9))
    redis_client.set(PREFIX + "recs:metadata:last_run", json.dumps({"week": "2025-W45", "successful": 40,
                                                           "completed_at": (NOW - dt.timedelta(days=9)).isoformat()}))
    states = {**ALL_JOBS_FRESH, "popularity": {**ALL_JOBS_FRESH["popularity"], "consecutive_failures": 3}}
    results = _by_check(health.run_checks(redis_client, NOW, _settings, state=states.get))
    assert results["week_key"].status == health.WARNING  # last week's pointer on a Wednesday
    assert results["week_customers"].status == health.WARNING and results["week_customers"].value == 10
    assert results["metadata_age:weekly_recs"].status == health.WARNING
    assert results["metadata_age:forecast_worker"].status == health.CRITICAL  # older than 8 days
    assert results["forecast_failures"].status == health.CRITICAL  # 7% failed
    assert results["consecutive_failures:popularity"].status == health.CRITICAL

    redis_client.delete(PREFIX + "recs:current_week")
    results = _by_check(health.run_checks(redis_client, NOW, _settings, state=states.get))
    assert results["week_key"].status == health.CRITICAL and "week_customers" not in results


def _cli(url, *args, env=None):
    return subprocess.run([sys.executable, "-m", "scripts.health", "--redis-url", url, *args],
                          capture_output=True, text=True, env={**os.environ, **_key_env(), **(env or {})},
                          timeout=120)


def test_cli_exit_codes_json_and_emitted_gauges(redis_server, redis_client):
    now = dt.datetime.now(dt.timezone.utc)
    year, week, _ = now.isocalendar()
    current = f"{year}-W{week:02d}"
    # job state as Airflow Variables from the environment (AIRFLOW_VAR_<KEY>)
    state_env = {f"AIRFLOW_VAR_{_settings('JOB_STATE_KEY').format(job=job).upper()}":
                 json.dumps({"last_success": time.time(), "consecutive_failures": 0}) for job in health.JOBS}
    redis_client.set(PREFIX + "recs:current_week", current)
    redis_client.set(f"{PREFIX}{current}:1", "{}")
    redis_client.set(PREFIX + "forecast:metadata:last_run", json.dumps({
        "last_run": now.isoformat(), "total_products": 10, "failed": 0}))
    sink = UdpSink()
    try:
        out = _cli(redis_server.url, "--json", "--emit", env={**sink.env(), **state_env})
        time.sleep(0.3)
        assert out.returncode == health.OK, out.stdout + out.stderr
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["status"] == "OK" and len(report["checks"]) == 2 + 2 * len(health.JOBS) + 1
        assert sink.values("airflow.nightshift.health.week_key") == [(1.0, "g")]
        assert sink.values("airflow.nightshift.quality.weekly_recs.customers_cached") == [(1.0, "g")]
        (age, kind), = sink.values("airflow.nightshift.job.forecast_worker.data_age_seconds")
        assert kind == "g" and 0 <= age < 120
    finally:
        sink.close()

    redis_client.delete(PREFIX + "recs:current_week")
    out = _cli(redis_server.url, env=state_env)
    assert out.returncode == health.CRITICAL and "recs:current_week is not set" in out.stdout

    out = subprocess.run([sys.executable, "-m", "scripts.health", "--redis-url", "redis://127.0.0.1:1/0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == health.UNKNOWN and "cannot read Redis" in out.stdout


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bare_cli(*args, home, env=None):
    """The CLI as a user runs it in a fresh, not migrated AIRFLOW_HOME: no job state Variables, no
    Redis connection, no metadata database settings inherited from this test session."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW_VAR_", "AIRFLOW_CONN_", "AIRFLOW__DATABASE__"))}
    return subprocess.run([sys.executable, "-m", "scripts.health", *args], capture_output=True, text=True,
                          env={**base, **_key_env(), "AIRFLOW_HOME": str(home), **(env or {})}, timeout=120)


def _unknown_lines(out) -> dict[str, str]:
    assert out.returncode == health.UNKNOWN, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "overall: UNKNOWN"
    return {line.split()[1]: line for line in out.stdout.splitlines() if line.startswith("UNKNOWN")}


def test_cli_empty_airflow_home_is_unknown_not_ok(redis_server, redis_client, tmp_path):
    _plant(redis_client)
    out = _bare_cli("--redis-url", redis_server.url, "--no-count", home=tmp_path / "airflow")
    lines = _unknown_lines(out)
    assert "has no tables: run `airflow db migrate`" in lines["job_state"]
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in lines["job_state"]
    assert all(f"consecutive_failures:{job}" in lines for job in health.JOBS)
    assert not [line for line in out.stdout.splitlines() if line.startswith("OK") and "consecutive" in line]
    assert len(out.stdout.splitlines()) < 30 and not out.stderr.strip(), out.stdout + out.stderr

    debug = _bare_cli("--redis-url", redis_server.url, "--no-count", "--debug", home=tmp_path / "airflow")
    assert debug.returncode == health.UNKNOWN and "Traceback" in debug.stdout + debug.stderr


def test_cli_unreachable_redis_is_unknown(tmp_path):
    port = _closed_port()
    out = _bare_cli("--redis-url", f"redis://127.0.0.1:{port}/0", home=tmp_path / "airflow")
    assert f"cannot read Redis at 127.0.0.1:{port} db 0" in _unknown_lines(out)["redis"]
    assert "start Redis or fix --redis-url" in _unknown_lines(out)["redis"]


def test_cli_missing_redis_connection_is_unknown(tmp_path):
    out = _bare_cli(home=tmp_path / "airflow")
    line = _unknown_lines(out)["redis"]
    assert "no Redis connection 'redis_default'" in line and "AIRFLOW_CONN_REDIS_DEFAULT=" in line
    assert "--redis-url" in line


def test_cli_redis_url_path_is_the_database(redis_server, tmp_path):
    out = _bare_cli("--redis-url", redis_server.url.rsplit("/", 1)[0] + "/3?db=4", home=tmp_path / "airflow")
    assert "/3 in its URL path and db=4" in _unknown_lines(out)["redis"]

"""A real Airflow cluster on this machine: API server, dag-processor, scheduler (and a triggerer
when asked) with a LocalExecutor and a metadata database of its own in PostgreSQL, every process
in its own process group and stopped by group id, also when the caller fails. The end-to-end
tests run on it, and the demo runs the backfill DAG on it (a backfill triggers other DAGs' runs:
`airflow dags test` alone cannot run them)."""
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
from contextlib import contextmanager
from pathlib import Path

from include.runtime.services import EmbeddedRedis, fresh_database

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = secrets.token_hex(12)  # the admin user of this cluster, never reused
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


@contextmanager
def running_cluster(services, name: str, dag_files: dict[str, Path], env: dict[str, str] | None = None,
                    triggerer: bool = False, pythonpath: tuple[Path, ...] = (), redis_url: str | None = None):
    """Start a cluster that parses only `dag_files` (dag_id -> file: parsing stays light), its
    metadata database a fresh one on `services.postgres_url`'s server; `env` adds or overrides
    settings. Redis: `redis_url`, else a server of its own (parallel test sessions share and flush
    the test dbs). Yields the Cluster once every DAG is parsed; stops it after."""
    work = Path(tempfile.mkdtemp(prefix=f"nightshift-{name}-"))
    dags = work / "dags"
    dags.mkdir()
    for dag_id, path in dag_files.items():
        (dags / f"{dag_id}.py").symlink_to(path)
    (work / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    meta_db = f"nightshift_{name.replace('-', '_')}_{os.getpid()}"
    meta_url = fresh_database(services.postgres_url, meta_db)
    port = _free_port()
    redis_server = EmbeddedRedis(work / "redis").start() if redis_url is None else None
    own_redis = {"AIRFLOW_CONN_REDIS_DEFAULT": f"redis://127.0.0.1:{redis_server.server.port}?db=0"} if redis_server else {}
    cluster = Cluster(work, {
        **os.environ,
        **own_redis,
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
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join(map(str, (ROOT, *pythonpath))),
        **(env or {})}, port)
    cluster.redis_url = redis_server.url if redis_server else redis_url
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
        if triggerer:
            cluster.start("triggerer", "triggerer")  # runs the Deadline Alert callbacks
        status, body = cluster.request("POST", "/auth/token", {"username": "admin", "password": PASSWORD})
        assert status in (200, 201), body
        cluster.token = body["access_token"]
        for dag_id in dag_files:
            cluster.wait_for(f"{dag_id} parsed", lambda d=dag_id: cluster.request("GET", f"/api/v2/dags/{d}")[0] == 200,
                             timeout=180)
        yield cluster
    finally:
        cluster.stop()
        if redis_server:
            redis_server.stop()
        import psycopg

        with psycopg.connect(services.postgres_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {meta_db} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)  # logs are in the assertion messages



"""Real services for the tests: PostgreSQL and Redis, and an Airflow home with a metadata DB.

Services come from NIGHTSHIFT_PG_URL / NIGHTSHIFT_REDIS_URL, else the local ones on
5432/6379, else embedded servers started here. On a shared server the tests use a database
and a Redis db of their own, so they never touch anyone's data.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_RUN_DIR = Path(tempfile.mkdtemp(prefix="nightshift-tests-"))
# Airflow reads its home and config on first import: set them before anything imports it.
os.environ["AIRFLOW_HOME"] = str(_RUN_DIR / "airflow")
os.environ.update({
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "ARTIFACT_ROOT": (_RUN_DIR / "artifacts").as_uri(),
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
})

import pytest  # noqa: E402

from include.runtime.services import fresh_database, resolve  # noqa: E402

TEST_DATABASE = f"nightshift_test_{os.getpid()}"  # one per session: parallel sessions never collide
TEST_REDIS_DB = int(os.environ.get("NIGHTSHIFT_TEST_REDIS_DB", "15"))


@pytest.fixture(scope="session")
def services():
    found = resolve(_RUN_DIR / "services", use_local=True)
    admin_url = found.postgres_url
    found.postgres_url = fresh_database(admin_url, TEST_DATABASE)
    found.redis_url = found.redis_url.rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}"
    os.environ.update(found.airflow_env())
    print(f"\ntest services: postgres={found.origin['postgres']} redis={found.origin['redis']}")
    yield found
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)")
    found.stop()


@pytest.fixture(scope="session")
def migrated_database(services):
    from include.runtime.database import Database
    from include.runtime.schema import migrate

    db = Database("source_db")
    migrate(db)
    yield db
    db.close()


@pytest.fixture(scope="module")
def database(migrated_database):
    """The test database with every output table emptied (ids restarted) when a module starts: a
    module sees only the rows it wrote itself, whichever modules ran before it."""
    from include.datasets.source_tables import SOURCE_TABLES

    db = migrated_database
    with db.conn.cursor() as cur:
        cur.execute("SELECT table_name, quote_ident(table_name) FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")
        outputs = [quoted for name, quoted in cur.fetchall() if name not in SOURCE_TABLES]
        cur.execute("SET LOCAL lock_timeout = '30s'")  # a lock left behind fails the module, never hangs it
        cur.execute(f"TRUNCATE {', '.join(outputs)} RESTART IDENTITY")
    db.conn.commit()
    return db


@pytest.fixture
def redis_client(services):
    import redis

    client = redis.from_url(services.redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def airflow_home(services):
    """A migrated metadata database in a temporary AIRFLOW_HOME."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy(), cwd=ROOT)
    return Path(os.environ["AIRFLOW_HOME"])


def run_dag(dag_id: str, conf: dict | None = None, logical_date: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`airflow dags test` in a subprocess, as a user would run it; output kept for asserts.
    `env` adds settings for this run only (e.g. a stricter validation threshold)."""
    cmd = [sys.executable, "-m", "airflow", "dags", "test", dag_id]
    if logical_date:
        cmd.append(logical_date)
    if conf is not None:
        cmd += ["--conf", json.dumps(conf)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT, timeout=900)


@pytest.fixture
def dag_runner(airflow_home, database):
    return run_dag

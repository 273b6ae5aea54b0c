"""Security: values from conf and data reach SQL only as bound parameters; credentials come from
connections and never show in logs, output or XCom; artifacts load without pickle; TLS and auth
settings in the connection extras reach the clients."""
from __future__ import annotations

import ast
import copy
import json
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

from include.datasets.source_tables import SOURCE_TABLES, load_source
from include.datasets.synthetic import generate

ROOT = Path(__file__).resolve().parents[2]
AS_OF, WEEK = "2024-06-02", "2024-W22"
INJECTIONS = [
    "x'); DROP TABLE \"Order\"; --",
    "'; DELETE FROM \"OrderItem\" WHERE '1'='1",
    "Robert\"); DROP TABLE \"Client\";--",
    "%(until)s %s {week} {customer_id}",
]
REDIS_SECRET = "Redis-S3cret-7f3a9c"
PG_SECRET = "Pg-S3cret-91b2e4"


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=120, products=30, start="2023-06-05", end="2024-06-10", seed=9)
    data.products.loc[:len(INJECTIONS) - 1, "name"] = INJECTIONS
    data.products.loc[:1, "category"] = "'); DROP TABLE \"Product\"; --"
    load_source(database, data.orders, data.products, data.customers)
    return data


def _sql(database, statement, params=None):
    with database.conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall()
    database.conn.commit()
    return rows


def _snapshot(database) -> tuple[list[str], dict[str, int]]:
    """The tables of the database and the source tables' row counts."""
    from psycopg import sql

    tables = [t for (t,) in _sql(database, "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                                           "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
    counts = {t: _sql(database, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t)))[0][0]
              for t in SOURCE_TABLES}
    return tables, counts


def _string_params():
    """(dag_id, param name, schema) of every param of every DAG that accepts a string."""
    from airflow.models import DagBag

    bag = DagBag(str(ROOT / "dags"))
    assert not bag.import_errors
    for dag_id, dag in sorted(bag.dags.items()):
        for name in dag.params:
            schema = dag.params.get_param(name).schema
            types = schema.get("type") if isinstance(schema.get("type"), list) else [schema.get("type")]
            if "string" in types:
                yield dag, name, schema


# Params whose schema cannot pin the string down, and what stops an injection there instead.
SCHEMA_ACCEPTED = {
    ("popularity", "as_of"): "event_scoring.resolve_as_of parses it as a date-time or fails the run",
    ("popular_segments", "as_of"): "same",
    ("user_affinity", "as_of"): "same",
    ("cf_training", "rollback_to"): "ModelStore.path accepts version ids only",
    ("faiss_rebuild", "rollback_to"): "same",
    ("faiss_rebuild", "embedding_model"): "a local model directory; never reaches SQL",
}


def test_conf_strings_are_rejected_by_the_schema_or_by_their_resolver(tmp_path):
    import datetime as dt

    from airflow.sdk.exceptions import AirflowFailException

    from include.jobs.event_scoring import resolve_as_of
    from include.runtime.model_store import ArtifactError, ModelStore

    accepted = set()
    checked = 0
    for dag, name, _ in _string_params():
        for value in INJECTIONS:
            params = copy.deepcopy(dag.params)
            checked += 1
            try:
                params[name] = value
                params.validate()
            except Exception as exc:
                assert type(exc).__name__ == "ParamValidationError", exc
            else:
                accepted.add((dag.dag_id, name))
    assert checked >= 10 * len(INJECTIONS)
    assert accepted <= set(SCHEMA_ACCEPTED), f"a string param accepts SQL text: {accepted - set(SCHEMA_ACCEPTED)}"
    now = dt.datetime(2024, 6, 2, 12)
    for value in INJECTIONS:
        with pytest.raises(AirflowFailException, match="ISO date"):
            resolve_as_of(value, now, now)
        with pytest.raises(ArtifactError, match="not a version id"):
            ModelStore("cf_als", root=tmp_path).path(value)


def test_injection_through_conf_fails_the_run_and_changes_nothing(dag_runner, database, data):
    before = _snapshot(database)
    for dag_id, conf in (("weekly_recs", {"as_of_date": INJECTIONS[0], "week": INJECTIONS[1]}),
                         ("popularity", {"as_of": INJECTIONS[0]})):
        out = dag_runner(dag_id, conf)
        assert out.returncode != 0, f"{dag_id} ran with {conf}"
    assert _snapshot(database) == before


def _with_password(url: str, secret: str) -> tuple[str, str]:
    """`url` with a password (its own when it has one: that must not leak either)."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    netloc = f"{parts.username or 'postgres'}:{secret}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc)), secret


def test_injected_names_are_written_and_passwords_never_leak(dag_runner, database, services, airflow_home, data,
                                                             tmp_path):
    import redis

    from include.runtime.services import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        port = int(urlsplit(server.url).port)
        redis.Redis(port=port).config_set("requirepass", REDIS_SECRET)
        client = redis.Redis(port=port, password=REDIS_SECRET)
        pg_url, pg_secret = _with_password(services.airflow_env()["AIRFLOW_CONN_SOURCE_DB"], PG_SECRET)
        env = {"AIRFLOW_CONN_REDIS_DEFAULT": f"redis://:{REDIS_SECRET}@127.0.0.1:{port}?db=0",
               "AIRFLOW_CONN_SOURCE_DB": pg_url, "AIRFLOW_CONN_RECS_DB": pg_url}
        before = _snapshot(database)
        out = dag_runner("weekly_recs", {"as_of_date": AS_OF, "shard_count": 2}, env=env)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

        # the names were processed and written exactly; the database holds what it held
        tables, counts = _snapshot(database)
        assert tables == before[0] and counts == before[1]
        names = dict(_sql(database, 'SELECT "ID", "Name" FROM "Product"'))
        categories = dict(_sql(database, 'SELECT "ID", "Category" FROM "Product"'))
        written = set()
        keys = list(client.scan_iter(f"{WEEK}:*"))
        assert len(keys) > 20
        for key in keys:
            for rec in json.loads(client.get(key))["recommendations"]:
                assert rec["product_name"] == names[rec["product_id"]]
                assert rec["category"] == categories[rec["product_id"]]
                written.add(rec["product_name"])
        assert set(INJECTIONS) <= written

        # the passwords appear in no output, task log or XCom value (`dags test` prints the task logs)
        output = out.stdout + out.stderr
        assert "weekly_recs shard 2/2 published" in output and "weekly_recs published" in output
        logs = [p for p in (airflow_home / "logs").rglob("*") if p.is_file()]
        for secret in (REDIS_SECRET, pg_secret):
            assert secret not in output
            assert not [p for p in logs if secret in p.read_text(errors="replace")]
            with sqlite3.connect(airflow_home / "airflow.db") as meta:
                values = [str(v) for (v,) in meta.execute("SELECT value FROM xcom WHERE dag_id = 'weekly_recs'")]
            assert values and not [v for v in values if secret in v]
    finally:
        server.stop()


def test_tls_and_auth_extras_reach_the_clients(services, monkeypatch):
    import psycopg
    from airflow.providers.redis.hooks.redis import RedisHook
    from airflow.sdk.exceptions import AirflowFailException
    from redis.connection import SSLConnection

    from include.runtime.database import Database
    from include.runtime.redis_cache import RedisCache

    pg_url = services.airflow_env()["AIRFLOW_CONN_SOURCE_DB"]
    monkeypatch.setenv("AIRFLOW_CONN_TLS_DB", f"{pg_url}?sslmode=disable&sslrootcert=/etc/ssl/nightshift-ca.pem")
    with Database("tls_db") as db:
        settings = db.conn.info.get_parameters()
        assert settings["sslmode"] == "disable" and settings["sslrootcert"] == "/etc/ssl/nightshift-ca.pem"
    monkeypatch.setenv("AIRFLOW_CONN_TLS_DB", f"{pg_url}?sslmode=require")
    with Database("tls_db") as db:
        try:
            assert db.conn.pgconn.ssl_in_use  # a server with TLS
        except psycopg.OperationalError as exc:
            assert "SSL was required" in str(exc)  # a server without: the client demanded it

    monkeypatch.setenv("AIRFLOW_CONN_TLS_REDIS", f"redis://:{REDIS_SECRET}@127.0.0.1:1?db=0&ssl=true"
                                                 "&ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/nightshift-ca.pem"
                                                 "&ssl_check_hostname=true")
    pool = RedisHook("tls_redis").get_conn().connection_pool
    assert pool.connection_class is SSLConnection
    assert {k: pool.connection_kwargs[k] for k in ("ssl_cert_reqs", "ssl_ca_certs", "password")} == {
        "ssl_cert_reqs": "required", "ssl_ca_certs": "/etc/ssl/nightshift-ca.pem", "password": REDIS_SECRET}
    cache = RedisCache("tls_redis")
    with pytest.raises(AirflowFailException, match="tls_redis") as failure:
        cache.client
    assert REDIS_SECRET not in str(failure.value)


_SCANNED = ("include", "dags", "plugins", "scripts")
_CREDENTIAL = [
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"{}]+:[^/\s@'\"{}]+@", re.I),  # a URL with user:password
    re.compile(r"\b(password|passwd|pwd|secret|secret_key|api_key|apikey|token|requirepass)\b['\"]?\s*[=:]\s*"
               r"['\"][^'\"\s{}]{3,}['\"]", re.I),  # a quoted literal assigned to a credential name
]


def test_repository_holds_no_literal_credentials():
    samples = ['AIRFLOW_CONN_X = "postgres://app:hunter22@db:5432/x"', 'password = "hunter22"', '{"api_key": "sk-123"}']
    assert all(any(p.search(s) for p in _CREDENTIAL) for s in samples)
    found = []
    for folder in _SCANNED:
        for path in (ROOT / folder).rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".npy", ".npz", ".parquet"):
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if any(p.search(line) for p in _CREDENTIAL):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "credentials belong in Airflow connections or the environment:\n" + "\n".join(found)


def test_artifacts_load_without_pickle():
    unsafe = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|\bread_pickle\(|\bjoblib\b|\bcloudpickle\b|\bdill\b"
                        r"|torch\.load\(")
    loads = 0
    for path in (ROOT / "include").rglob("*.py"):
        text = path.read_text()
        assert not unsafe.search(text), f"{path}: artifacts load without pickle"
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "numpy")):
                pickle = {k.arg: k.value for k in node.keywords}.get("allow_pickle")
                assert isinstance(pickle, ast.Constant) and pickle.value is False, \
                    f"{path}:{node.lineno}: np.load without allow_pickle=False"
                loads += 1
    assert loads >= 3


class _Payload:
    """Creates its marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_array_with_a_matching_checksum_is_refused(tmp_path):
    from include.runtime.model_store import ArtifactError, ModelStore, _sha256

    store = ModelStore("cf_als", root=tmp_path)
    version = store.save({"user_factors": np.ones((3, 2), dtype=np.float32)}, {})
    path = store.path(version) / "user_factors.npy"
    marker = tmp_path / "unpickled"
    np.save(path, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    meta_path = store.path(version) / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["user_factors.npy"].update(sha256=_sha256(path), bytes=path.stat().st_size)  # re-signed
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="not a plain .npy"):
        store.load(version)
    assert not marker.exists()

"""The SQL dialect and query files follow the connection type; choosing them opens no connection."""
from __future__ import annotations

import pytest

from include.runtime.database import SQL_ROOT, Database

# A closed port: the dialect must come from the connection alone, never from a server.
_URIS = {"postgres": "postgres://u:p@127.0.0.1:1/db", "mssql": "mssql://u:p@127.0.0.1:1/db"}


@pytest.mark.parametrize("dialect", sorted(_URIS))
def test_the_connection_type_picks_the_sql_directory(monkeypatch, dialect):
    monkeypatch.setenv("AIRFLOW_CONN_DIALECT_DB", _URIS[dialect])
    db = Database("dialect_db")
    assert db.dialect == dialect
    # upsert_job_watermark differs between the dialects (ON CONFLICT vs MERGE)
    assert db.sql("upsert_job_watermark") == (SQL_ROOT / dialect / "upsert_job_watermark.sql").read_text()


def test_an_unsupported_connection_type_fails_the_run(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("AIRFLOW_CONN_DIALECT_DB", "mysql://u:p@127.0.0.1:1/db")
    with pytest.raises(AirflowFailException, match="has type 'mysql'"):
        Database("dialect_db").dialect

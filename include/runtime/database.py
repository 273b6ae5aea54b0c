"""SQL access through an Airflow connection; the dialect comes from the connection type.

Queries live one per file under include/sql/<dialect>/<name>.sql with the same name in both
dialects. Values always travel as bound parameters (pyformat `%(name)s`, which psycopg and
pymssql both take); identifiers come only from fixed lists in the code.
"""
from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.runtime.config import SOURCE_CONN_ID

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"
DIALECTS = {"postgres": "postgres", "postgresql": "postgres", "mssql": "mssql"}


def load_sql(dialect: str, name: str) -> str:
    path = SQL_ROOT / dialect / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no query {name!r} for dialect {dialect!r}: expected {path}")
    return path.read_text()


class Database:
    """One PostgreSQL or SQL Server database named by an Airflow connection id."""

    def __init__(self, conn_id: str = SOURCE_CONN_ID) -> None:
        self.conn_id = conn_id

    @cached_property
    def dialect(self) -> str:
        from airflow.sdk.bases.hook import BaseHook

        conn_type = BaseHook.get_connection(self.conn_id).conn_type
        if conn_type not in DIALECTS:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"connection {self.conn_id!r} has type {conn_type!r}; expected one of "
                f"{sorted(DIALECTS)}. Point it at PostgreSQL or SQL Server.")
        return DIALECTS[conn_type]

    @cached_property
    def hook(self):
        from airflow.sdk.bases.hook import BaseHook

        return BaseHook.get_connection(self.conn_id).get_hook()

    @cached_property
    def conn(self):
        """One DB-API connection per Database object, closed by `close`."""
        return self.hook.get_conn()

    def close(self) -> None:
        if "conn" in self.__dict__:
            self.__dict__.pop("conn").close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def sql(self, name: str) -> str:
        return load_sql(self.dialect, name)

    def frame(self, name: str, params: dict[str, Any] | None = None) -> "pd.DataFrame":
        """Run query `name` with bound `params`; the rows as a DataFrame."""
        import pandas as pd

        with self.conn.cursor() as cur:
            cur.execute(self.sql(name), params or {})
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
        self.conn.commit()
        return pd.DataFrame.from_records(rows, columns=columns)

    def bulk_frame(self, name: str, params: dict[str, Any] | None = None) -> "pd.DataFrame":
        """Like `frame`, for large results: on PostgreSQL the rows stream through COPY as CSV and
        pyarrow parses them, several times faster than building Python rows. Column types are
        inferred from the text, so callers cast what they need."""
        if self.dialect != "postgres":
            return self.frame(name, params)
        import io

        import pandas as pd

        buffer = io.BytesIO()
        with self.conn.cursor() as cur:
            # psycopg binds the parameters client side for COPY; the values stay escaped literals
            with cur.copy(f"COPY ({self.sql(name)}) TO STDOUT (FORMAT csv, HEADER)", params or {}) as copy:
                for block in copy:
                    buffer.write(block)
        self.conn.commit()
        buffer.seek(0)
        return pd.read_csv(buffer, engine="pyarrow")

    def scalar(self, name: str, params: dict[str, Any] | None = None) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(self.sql(name), params or {})
            row = cur.fetchone()
        self.conn.commit()
        return None if row is None else row[0]

    def execute(self, name: str, params: dict[str, Any] | None = None) -> int:
        """Run statement `name` in its own transaction; the affected row count."""
        with self.conn.cursor() as cur:
            cur.execute(self.sql(name), params or {})
            count = cur.rowcount
        self.conn.commit()
        return count

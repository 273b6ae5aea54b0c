"""SQL access through an Airflow connection; the dialect comes from the connection type.

Queries live one per file under include/sql/<dialect>/<name>.sql with the same name in both
dialects. Values always travel as bound parameters (pyformat `%(name)s`, which psycopg and
pymssql both take); identifiers come only from fixed lists in the code.

Failure model (DESIGN.md): errors a retry cannot fix (`permanent`) become AirflowFailException
with the connection and the statement named; the rest (connection reset, timeouts, lock and
deadlock aborts: OperationalError, InterfaceError) are raised as they come, and Airflow retries.
"""
from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.runtime.config import SOURCE_CONN_ID

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"
DIALECTS = {"postgres": "postgres", "postgresql": "postgres", "mssql": "mssql"}
# DB-API 2.0 classes (psycopg and pymssql alike) that a retry cannot fix: bad SQL or a schema
# mismatch, missing privileges, constraint violations, values the column refuses.
_PERMANENT = frozenset({"ProgrammingError", "IntegrityError", "DataError", "NotSupportedError"})
_LOGIN_REFUSED = ("password authentication failed", "no pg_hba.conf entry", "does not exist",  # libpq
                  "Login failed for user", "Cannot open database")  # SQL Server
_PARAM = re.compile(r"%\((\w+)\)s")
_COMMENT = re.compile(r"--[^\n]*")


def permanent(exc: BaseException) -> bool:
    """True for a database error that fails the same way on every retry."""
    return any(cls.__name__ in _PERMANENT for cls in type(exc).__mro__)


def positional(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """A pyformat query (`%(name)s`, literal `%%`) in libpq's numbered form ($1, $2, ...) and its
    values in that order. Comments go first, so a name only a comment mentions binds nothing."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PARAM.sub(number, _COMMENT.sub("", sql)).replace("%%", "%"), [params[name] for name in names]


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
        """One DB-API connection per Database object, closed by `close`. A login the server
        refuses (unknown role or database, wrong password, no pg_hba entry) fails the run at once:
        the connection refused has no SQLSTATE, so the server's message tells it apart."""
        try:
            return self.hook.get_conn()
        except Exception as exc:
            if not any(text in str(exc) for text in _LOGIN_REFUSED):
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"connection {self.conn_id!r} was refused: {exc}. Fix its login, password or database "
                "(Airflow connection or AIRFLOW_CONN_ variable), then clear the failed task; a retry "
                "would be refused the same way.") from exc

    def close(self) -> None:
        if "conn" in self.__dict__:
            self.__dict__.pop("conn").close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def sql(self, name: str) -> str:
        return load_sql(self.dialect, name)

    @contextmanager
    def failing_for_good(self, statement: str):
        """Re-raise a permanent error of the block as AirflowFailException (no retry)."""
        try:
            yield
        except Exception as exc:
            if not permanent(exc):
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"{statement} on connection {self.conn_id!r} failed, and a retry would fail the same way: "
                f"{type(exc).__name__}: {exc}. Check the schema (python -m scripts.migrate), the connection's "
                "rights and the data, then clear the failed task.") from exc

    def frame(self, name: str, params: dict[str, Any] | None = None) -> "pd.DataFrame":
        """Run query `name` with bound `params`; the rows as a DataFrame."""
        import pandas as pd

        with self.failing_for_good(f"query {name!r}"), self.conn.cursor() as cur:
            cur.execute(self.sql(name), params or {})
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
        self.conn.commit()
        return pd.DataFrame.from_records(rows, columns=columns)

    def bulk_frame(self, name: str, params: dict[str, Any] | None = None,
                   part_rows: int = 500_000) -> "pd.DataFrame":
        """Like `frame`, for millions of rows: on PostgreSQL through ADBC (Apache Arrow's driver,
        binary rows decoded in C into typed columns), several times faster than building Python
        rows. The values stay bound by the server, in a cursor fetched `part_rows` at a time: with
        bound values ADBC cannot COPY, and one fetch of everything held the whole result in libpq
        as well (weekly_recs' 6.4M training lines: a 2.1 GB peak in one fetch, 1.1 GB in parts)."""
        if self.dialect != "postgres":
            return self.frame(name, params)
        import adbc_driver_postgresql.dbapi as adbc
        import pyarrow as pa

        text, values = positional(self.sql(name), params or {})
        with self.failing_for_good(f"query {name!r}"), adbc.connect(self.conninfo) as conn, conn.cursor() as cur:
            cur.adbc_statement.set_options(**{"adbc.postgresql.use_copy": "false"})  # FETCH cannot be COPYed
            cur.execute(f"DECLARE bulk_frame NO SCROLL CURSOR FOR {text}", values or None)
            parts, started = [], time.monotonic()
            while True:
                cur.execute(f"FETCH FORWARD {int(part_rows)} FROM bulk_frame")
                parts.append(cur.fetch_arrow_table())
                if parts[-1].num_rows < part_rows:
                    return pa.concat_tables(parts).to_pandas()
                rows = len(parts) * part_rows  # a long read: its progress, part by part
                log.info("query %r: %s rows read (%s/s)", name, f"{rows:,}",
                         f"{rows / (time.monotonic() - started):,.0f}")

    @property
    def conninfo(self) -> str:
        """The libpq settings of this object's open connection (host, auth, TLS...), for a second
        driver to connect exactly the same way."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **{o.keyword.decode(): o.val.decode() for o in self.conn.pgconn.info if o.val})

    def scalar(self, name: str, params: dict[str, Any] | None = None) -> Any:
        with self.failing_for_good(f"query {name!r}"), self.conn.cursor() as cur:
            cur.execute(self.sql(name), params or {})
            row = cur.fetchone()
        self.conn.commit()
        return None if row is None else row[0]

    def execute(self, name: str, params: dict[str, Any] | None = None) -> int:
        """Run statement `name` in its own transaction; the affected row count."""
        with self.failing_for_good(f"query {name!r}"), self.conn.cursor() as cur:
            cur.execute(self.sql(name), params or {})
            count = cur.rowcount
        self.conn.commit()
        return count

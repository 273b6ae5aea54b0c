"""Bulk loads into the SQL tables: COPY on PostgreSQL, multi-row INSERT batches on SQL Server.

`load` with a `delete` statement is the idempotent write of a shard: delete the shard's old rows and load the new
ones in one transaction, so a retried shard overwrites and never duplicates, and a load cut
off half way leaves the old rows. `replacing` is the same transaction for rows that come in parts.
"""
from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator

from include.runtime.database import Database

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# The only identifiers a bulk load may name: table -> columns, in load order.
TABLES: dict[str, tuple[str, ...]] = {
    "Client": ("ID", "Name", "IsActive", "IsBlocked", "Deleted", "Created", "gender", "age_group", "geo_id"),
    "ClientAgreement": ("ID", "ClientID"),
    "Product": ("ID", "Name", "Category", "Brand", "Price", "Description", "Created"),
    "Order": ("ID", "ClientAgreementID", "Created"),
    "OrderItem": ("ID", "OrderID", "ProductID", "Quantity", "Price"),
    "events": ("user_id", "product_id", "event_type", "ts"),
    "WeeklyRecommendation": ("CustomerID", "Week", "ProductID", "Rank", "Score", "Source", "GeneratedAt",
                             "ProductName", "Category", "PredictedQuantity", "LastPurchased",
                             "PurchaseFrequencyDays", "ExpiresAt"),
    "popular_items": ("segment_type", "segment_value", "category", "product_id", "rank", "score", "computed_at"),
    "user_category_affinity": ("user_id", "category", "affinity", "updated_at"),
    "user_profiles": ("user_id", "preferred_categories", "preferred_brands", "avg_price", "interaction_count", "updated_at"),
    "user_similarities": ("user_id", "rank", "similar_user_id", "score", "model_version"),
    "dead_letter": ("job_id", "job_name", "error", "stack_trace", "input"),
    "backfill_report": ("run_id", "job_name", "as_of", "succeeded", "failed", "skipped", "detail"),
}
_MSSQL_MAX_PARAMS = 2000  # SQL Server takes at most 2100 parameters per statement


def _quote(dialect: str, name: str) -> str:
    return f"[{name}]" if dialect == "mssql" else f'"{name}"'


def _columns(table: str, frame: "pd.DataFrame") -> tuple[str, ...]:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; bulk loads go to {sorted(TABLES)}")
    columns = TABLES[table]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"rows for {table} lack columns {missing}; expected {list(columns)}")
    return columns


class BulkWriter:
    """Loads DataFrames into the tables of TABLES through one Database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, table: str, frame: "pd.DataFrame", delete: str | None = None,
             params: dict[str, Any] | None = None) -> int:
        """Load `frame` into `table`, after statement `delete` (a query name) when given,
        all in one transaction; the rows loaded."""
        with self.replacing(table, delete, params) as write:
            return write(frame)

    @contextlib.contextmanager
    def replacing(self, table: str, delete: str | None = None,
                  params: dict[str, Any] | list[dict[str, Any]] | None = None) -> Iterator[Callable[["pd.DataFrame"], int]]:
        """One transaction on `table`: statement `delete` first (run once per dict when `params` is
        a list), then each frame given to the yielded function is loaded as it comes, so a long
        shard streams its rows; commit at the end, rollback on any error (the old rows stay)."""
        conn = self.db.conn
        try:
            with conn.cursor() as cur:
                if delete is not None:
                    with self.db.failing_for_good(f"{delete} before the load of {table}"):
                        if isinstance(params, list):
                            cur.executemany(self.db.sql(delete), params)
                        else:
                            cur.execute(self.db.sql(delete), params or {})

                def write(frame: "pd.DataFrame") -> int:
                    with self.db.failing_for_good(f"load of {table}"):
                        return self.write(cur, table, frame)

                yield write
            conn.commit()
        except BaseException:
            # a connection cut mid-load cannot roll back (the server already has): keep the real error
            with contextlib.suppress(Exception):
                conn.rollback()
            raise

    def write(self, cur, table: str, frame: "pd.DataFrame") -> int:
        """Load `frame` into `table` through `cur`, inside the caller's transaction; the rows loaded."""
        columns = _columns(table, frame)
        if len(frame):
            load = self._copy if self.db.dialect == "postgres" else self._insert_batches
            load(cur, table, frame[list(columns)])
        return len(frame)

    def _copy(self, cur, table: str, frame: "pd.DataFrame") -> None:
        """COPY as CSV written by pyarrow (an order of magnitude faster than DataFrame.to_csv):
        nulls are empty and unquoted, strings quoted, so empty strings stay empty strings."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        target = f'{_quote("postgres", table)} ({", ".join(_quote("postgres", c) for c in frame.columns)})'
        chunk = 500_000
        with cur.copy(f"COPY {target} FROM STDIN (FORMAT csv)") as copy:
            for start in range(0, len(frame), chunk):
                block = pa.Table.from_pandas(frame.iloc[start:start + chunk], preserve_index=False)
                sink = pa.BufferOutputStream()
                pacsv.write_csv(block, sink, pacsv.WriteOptions(include_header=False))
                copy.write(sink.getvalue().to_pybytes())

    def _insert_batches(self, cur, table: str, frame: "pd.DataFrame") -> None:
        width = len(frame.columns)
        rows_per_batch = max(1, min(1000, _MSSQL_MAX_PARAMS // width))
        head = f'INSERT INTO {_quote("mssql", table)} ({", ".join(_quote("mssql", c) for c in frame.columns)}) VALUES '
        row_marks = "(" + ", ".join(["%s"] * width) + ")"
        records = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
        batch: list[tuple] = []
        for record in records:
            batch.append(record)
            if len(batch) == rows_per_batch:
                cur.execute(head + ", ".join([row_marks] * len(batch)), tuple(v for r in batch for v in r))
                batch = []
        if batch:
            cur.execute(head + ", ".join([row_marks] * len(batch)), tuple(v for r in batch for v in r))

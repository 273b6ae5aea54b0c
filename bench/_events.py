"""Synthetic events for the event scoring benchmarks: vectorised numpy, loaded with binary COPY.

Every column of an event is fixed-width once the rows are grouped by event type (the type's
name has one length per group), so each group's rows are one numpy structured array in
PostgreSQL's binary COPY layout: no per-row Python, no text formatting.
"""
from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd

from bench._common import say
from include.models.popularity import EVENT_TYPES

TYPE_SHARES = (0.05, 0.15, 0.80)  # purchase, add_to_cart, view
_PG_EPOCH = dt.datetime(2000, 1, 1)


def products(n: int, categories: int = 50, brands: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    code = rng.integers(0, categories, n)
    return pd.DataFrame({"product_id": ids, "name": np.char.add("Product ", ids.astype(str)),
                         "category_code": code, "category": np.char.add("category-", code.astype(str)),
                         "brand": np.char.add("brand-", rng.integers(0, brands, n).astype(str)),
                         "price": np.round(np.exp(rng.normal(3.0, 0.7, n)), 2), "description": "",
                         "created_at": pd.Timestamp("2020-01-01")})


def events(n: int, users: int, n_products: int, until: dt.datetime, days: float, seed: int = 1,
           first_user: int = 1, catalogue: pd.DataFrame | None = None,
           favourite_share: float = 0.0) -> dict[str, np.ndarray]:
    """Columns user_id, product_id, type code (index into EVENT_TYPES), ts (µs since 2000-01-01) of
    n events in the `days` before `until`: Zipf-like product popularity, uniform users. With a
    catalogue, `favourite_share` of a user's events fall in one of its 3 favourite categories, as
    real users' do (product popularity inside the category is skewed too)."""
    rng = np.random.default_rng(seed)
    rank_weight = 1.0 / np.arange(1, n_products + 1) ** 0.9
    cdf = np.cumsum(rank_weight[rng.permutation(n_products)])
    product = np.searchsorted(cdf, rng.random(n) * cdf[-1]).astype(np.int64) + 1
    user = rng.integers(first_user, first_user + users, n, dtype=np.int64)
    if catalogue is not None and favourite_share > 0:
        codes = catalogue["category_code"].to_numpy()
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes, minlength=codes.max() + 1)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        favourites = np.random.default_rng(seed + 1).integers(0, len(sizes), (users, 3))
        pick = np.flatnonzero(rng.random(n) < favourite_share)
        category = favourites[user[pick] - first_user, rng.integers(0, 3, len(pick))]
        rank = (sizes[category] * rng.random(len(pick)) ** 2).astype(np.int64)
        product[pick] = catalogue["product_id"].to_numpy()[order[starts[category] + rank]]
    code = np.searchsorted(np.cumsum(TYPE_SHARES), rng.random(n) * sum(TYPE_SHARES)).astype(np.int8)
    until_us = int((until - _PG_EPOCH).total_seconds()) * 1_000_000
    ts = until_us - (rng.random(n) * days * 86400).astype(np.int64) * 1_000_000
    return {"user_id": user, "product_id": product, "code": code, "ts_us": ts}


def as_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """The DESIGN events frame (for the pandas baselines)."""
    return pd.DataFrame({"user_id": columns["user_id"], "product_id": columns["product_id"],
                         "event_type": np.array(EVENT_TYPES, dtype=object)[columns["code"]],
                         "ts": pd.to_datetime(columns["ts_us"], unit="us", origin=pd.Timestamp(_PG_EPOCH))})


def copy_events(conn, columns: dict[str, np.ndarray], chunk: int = 1_000_000) -> int:
    """COPY events (user_id, product_id, event_type, ts) FROM STDIN in binary format."""
    started = time.monotonic()
    n = len(columns["user_id"])
    with conn.cursor() as cur:
        with cur.copy("COPY events (user_id, product_id, event_type, ts) FROM STDIN (FORMAT binary)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
            for code, name in enumerate(EVENT_TYPES):
                rows = np.flatnonzero(columns["code"] == code)
                label = name.encode()
                layout = np.dtype([("fields", ">i2"), ("l1", ">i4"), ("user", ">i8"), ("l2", ">i4"), ("product", ">i8"),
                                   ("l3", ">i4"), ("type", f"S{len(label)}"), ("l4", ">i4"), ("ts", ">i8")])
                for begin in range(0, len(rows), chunk):
                    part = rows[begin:begin + chunk]
                    block = np.empty(len(part), dtype=layout)
                    block["fields"], block["l1"], block["l2"], block["l3"], block["l4"] = 4, 8, 8, len(label), 8
                    block["user"] = columns["user_id"][part]
                    block["product"] = columns["product_id"][part]
                    block["type"] = label
                    block["ts"] = columns["ts_us"][part]
                    copy.write(block.tobytes())
            copy.write((-1).to_bytes(2, "big", signed=True))
    conn.commit()
    say(f"  {n:,} events copied in {time.monotonic() - started:.1f}s")
    return n


def load_catalogue_and_events(db, product_frame: pd.DataFrame, columns: dict[str, np.ndarray],
                              users: int) -> dict[str, float]:
    """Empty source tables, the products, clients 1..users, then the events with their indexes
    built after the load (faster than maintaining them row by row)."""
    from include.runtime.bulk_writer import BulkWriter

    started = time.monotonic()
    db.execute("truncate_source")
    writer = BulkWriter(db)
    writer.load("Product", product_frame.rename(columns={
        "product_id": "ID", "name": "Name", "category": "Category", "brand": "Brand", "price": "Price",
        "description": "Description", "created_at": "Created"}))
    ids = np.arange(1, users + 1, dtype=np.int64)
    rng = np.random.default_rng(7)
    writer.load("Client", pd.DataFrame({
        "ID": ids, "Name": "c", "IsActive": 1, "IsBlocked": 0, "Deleted": 0, "Created": pd.Timestamp("2020-01-01"),
        "gender": rng.choice(np.array(["f", "m", "x"]), users), "age_group": rng.choice(
            np.array(["18-24", "25-34", "35-44", "45-54", "55+"]), users), "geo_id": rng.integers(1, 21, users)}))
    catalogue = time.monotonic() - started
    conn = db.conn
    with conn.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS ix_events_ts; DROP INDEX IF EXISTS ix_events_user")
    conn.commit()
    copy_events(conn, columns)
    loaded = time.monotonic()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE INDEX IF NOT EXISTS ix_events_ts ON events (ts)")
        cur.execute("CREATE INDEX IF NOT EXISTS ix_events_user ON events (user_id)")
        cur.execute("VACUUM ANALYZE events")
        cur.execute('VACUUM ANALYZE "Product"')
    conn.autocommit = False
    say(f"  indexes and statistics in {time.monotonic() - loaded:.1f}s")
    return {"catalogue_load_s": round(catalogue, 2), "events_load_s": round(time.monotonic() - started - catalogue, 2)}


def read_window(db, since: dt.datetime, until: dt.datetime, with_products: bool = False) -> pd.DataFrame:
    """The pandas baselines' input: events in (since, until] (with category, brand, price), via COPY."""
    import io

    columns = "e.user_id, e.product_id, e.event_type, e.ts"
    join = ""
    if with_products:
        columns += ', p."Category" AS category, p."Brand" AS brand, p."Price" AS price'
        join = 'LEFT JOIN "Product" AS p ON p."ID" = e.product_id'
    buffer = io.BytesIO()
    with db.conn.cursor() as cur:
        with cur.copy(f"COPY (SELECT {columns} FROM events AS e {join} WHERE e.ts > %s AND e.ts <= %s) "
                      "TO STDOUT (FORMAT csv, HEADER true)", (since, until)) as copy:
            for data in copy:
                buffer.write(data)
    db.conn.commit()
    buffer.seek(0)
    return pd.read_csv(buffer, parse_dates=["ts"], engine="pyarrow" if _has_pyarrow() else "c")


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True

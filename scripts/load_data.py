"""Load demo or sample order data into the scratch database of connection `source_db`.

    python -m scripts.load_data synthetic --customers 100000 --products 50000 --start 2023-01-02 --end 2025-01-06
    python -m scripts.load_data synthetic --customers 1000000 --products 100000 --start 2024-01-01 \
        --end 2024-12-30 --views-per-purchase 0.25
    python -m scripts.load_data online-retail ../shared/data/online_retail.parquet
    python -m scripts.load_data --replace --confirm orders_scratch synthetic   # reload a non-empty one

Loading empties the order tables first, so it writes only into a database whose order tables are
empty, unless `--replace` comes with the database's name repeated in `--confirm`: a connection
pointed at a production order database by mistake then loses nothing. The cheap checks (the
connection, the server, the input file, the guard) all run before any data is read or generated.
Refusals are one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from pathlib import Path

from include.datasets.online_retail import read_online_retail
from include.datasets.source_tables import load_source, source_row_counts
from include.datasets.synthetic import generate
from include.runtime.config import SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.schema import migrate

ENV_VAR = f"AIRFLOW_CONN_{SOURCE_CONN_ID.upper()}"
DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "mssql": 1433}


def _refuse(message: str) -> None:
    """One line on stderr, exit code 2: a refusal needs no traceback."""
    print(f"load_data: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _check_server() -> None:
    """The connection exists and its server accepts TCP connections."""
    from airflow.sdk.bases.hook import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(SOURCE_CONN_ID)
    except AirflowNotFoundException:
        _refuse(f"no Airflow connection {SOURCE_CONN_ID!r}: set {ENV_VAR}='postgres://{{user}}:{{password}}@host:5432/orders' "
                f"(or add the connection {SOURCE_CONN_ID!r} to Airflow) for the scratch database to load")
    host, port = conn.host or "127.0.0.1", conn.port or DEFAULT_PORTS.get(conn.conn_type, 5432)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        _refuse(f"the server of connection {SOURCE_CONN_ID!r} at {host}:{port} does not answer ({exc}); "
                f"start it or fix {ENV_VAR}")


def _check_target(db: Database, replace: bool, confirm: str | None) -> tuple[str, dict[str, int]]:
    """Refuse unless the order tables are empty or their replacement is confirmed by name; the
    database's name and the rows that will go, per table."""
    try:
        name, counts = source_row_counts(db)
    except Exception as exc:  # login refused, wrong connection type, no rights: one line, no traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        _refuse(f"cannot read the order tables through connection {SOURCE_CONN_ID!r}: {type(exc).__name__}: {first}")
    held = {table: rows for table, rows in counts.items() if rows}
    if not held:
        return name, counts
    listed = ", ".join(f"{table} {rows}" for table, rows in held.items())
    if not replace:
        _refuse(f"refused: database {name!r} already holds order data ({listed}); loading would delete "
                f"it. If it is a scratch database, pass --replace --confirm {name}")
    if confirm != name:
        _refuse(f"refused: --confirm {confirm!r} does not name database {name!r}, which holds order data "
                f"({listed}); to replace it pass --replace --confirm {name}")
    return name, counts


def _guard_flags(parser: argparse.ArgumentParser, confirm_default, replace_default) -> None:
    parser.add_argument("--replace", action="store_true", default=replace_default,
                        help="delete the order data the database already holds (needs --confirm)")
    parser.add_argument("--confirm", metavar="DBNAME", default=confirm_default,
                        help="the database's name, repeated: --replace deletes nothing without it")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Load demo or sample order data into a scratch source database.")
    _guard_flags(parser, None, False)
    after = argparse.ArgumentParser(add_help=False)  # the same flags after the source name too
    _guard_flags(after, argparse.SUPPRESS, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="source", required=True)
    syn = sub.add_parser("synthetic", parents=[after], help="generated data with the structure of real orders")
    syn.add_argument("--customers", type=int, default=2000)
    syn.add_argument("--products", type=int, default=400)
    syn.add_argument("--start", default="2022-01-03")
    syn.add_argument("--end", default="2024-12-30")
    syn.add_argument("--seed", type=int, default=42)
    syn.add_argument("--views-per-purchase", type=float, default=2.0,
                     help="event stream density: views per purchased line (carts: a quarter of that)")
    syn.add_argument("--no-events", action="store_true", help="skip the event stream")
    uci = sub.add_parser("online-retail", parents=[after],
                         help="a parquet or CSV file in the UCI Online Retail columns")
    uci.add_argument("path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    _check_server()
    if args.source == "online-retail" and not Path(args.path).is_file():
        _refuse(f"no input file at {args.path!r} (resolved {Path(args.path).resolve()}); "
                "pass a parquet or CSV file in the UCI Online Retail columns")
    with Database(SOURCE_CONN_ID) as db:
        name, counts = _check_target(db, args.replace, args.confirm)
    if any(counts.values()):
        print(f"replacing the order data of database {name!r} (connection {SOURCE_CONN_ID!r}); removing:",
              flush=True)
        for table, rows in counts.items():
            print(f"  {table}: {rows} rows", flush=True)

    started = time.monotonic()
    if args.source == "synthetic":
        views = 0.0 if args.no_events else args.views_per_purchase
        data = generate(customers=args.customers, products=args.products, start=args.start, end=args.end,
                        seed=args.seed, views_per_purchase=views, carts_per_purchase=views / 4)
        frames, report = (data.orders, data.products, data.customers, None if args.no_events else data.events), {}
    else:
        data = read_online_retail(args.path)
        frames, report = (data.orders, data.products, data.customers, None), data.report
    generated = time.monotonic()
    with Database(SOURCE_CONN_ID) as db:
        migrate(db)
        written = load_source(db, *frames)
    summary = {"source": args.source, "report": report, "written": written,
               "generate_seconds": round(generated - started, 1), "load_seconds": round(time.monotonic() - generated, 1)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

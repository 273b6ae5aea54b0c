"""Load order data into the source database of connection `source_db` (replacing its contents).

    python -m scripts.load_data synthetic --customers 100000 --products 50000 --start 2023-01-02 --end 2025-01-06
    python -m scripts.load_data synthetic --customers 1000000 --products 100000 --start 2024-01-01 \
        --end 2024-12-30 --views-per-purchase 0.25
    python -m scripts.load_data online-retail ../shared/data/online_retail.parquet
"""
from __future__ import annotations

import argparse
import json
import logging
import time

from include.datasets.online_retail import read_online_retail
from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.runtime.config import SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.schema import migrate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Load order data into the source database.")
    sub = parser.add_subparsers(dest="source", required=True)
    syn = sub.add_parser("synthetic", help="generated data with the structure of real orders")
    syn.add_argument("--customers", type=int, default=2000)
    syn.add_argument("--products", type=int, default=400)
    syn.add_argument("--start", default="2022-01-03")
    syn.add_argument("--end", default="2024-12-30")
    syn.add_argument("--seed", type=int, default=42)
    syn.add_argument("--views-per-purchase", type=float, default=2.0,
                     help="event stream density: views per purchased line (carts: a quarter of that)")
    syn.add_argument("--no-events", action="store_true", help="skip the event stream")
    uci = sub.add_parser("online-retail", help="a parquet or CSV file in the UCI Online Retail columns")
    uci.add_argument("path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

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

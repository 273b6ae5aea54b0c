"""Benchmark: weekly_recs' shard path against a seed-style per-customer baseline.

    python -m bench.weekly_recs --customers 100000 --products 50000 [--shards 20] [--baseline-customers 300]

Same synthetic data, same PostgreSQL and Redis, one run:
- end_to_end: plan, prepare and every shard of the job (one history query per shard, the
  recommender scoring the shard at once, pipelined SETs, one COPY of the backup rows), shards
  run `--parallel` at a time in worker processes, as an executor with that many slots runs
  mapped tasks (default: one per core);
- seed_baseline: the seed's design, a thread pool of 4 walking active customers, each with one
  history query, a Python scoring pass (repeat cycles, then popular items of its categories from a
  list read once at start), one SETEX and row-by-row INSERTs, on a sample of customers.
`--customers` is the number of active customers aimed at; more are generated, since some lapse.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from bench._common import bench_services, emit, load_synthetic_orders, peak_memory_mb, say

AS_OF = dt.date(2024, 12, 29)
WEEK = "2024-W52"
SEED_THREADS = 4
_ACTIVE_SHARE = 0.74  # share of generated customers active in the last 90 days (measured on this generator)
_SEED_HISTORY = """
SELECT oi."ProductID", o."Created", oi."Quantity", p."Category"
FROM "ClientAgreement" ca JOIN "Order" o ON o."ClientAgreementID" = ca."ID"
JOIN "OrderItem" oi ON oi."OrderID" = o."ID" JOIN "Product" p ON p."ID" = oi."ProductID"
WHERE ca."ClientID" = %(customer)s AND o."Created" < %(until)s ORDER BY o."Created"
"""
_SEED_POPULAR = """
SELECT p."Category", oi."ProductID", count(*) AS n FROM "OrderItem" oi JOIN "Order" o ON o."ID" = oi."OrderID"
JOIN "Product" p ON p."ID" = oi."ProductID"
WHERE o."Created" >= %(since)s AND o."Created" < %(until)s
GROUP BY 1, 2 ORDER BY n DESC
"""


def _seed_popular(pg_url: str) -> dict[str, list[int]]:
    """The seed's start-up cache: the 50 best sellers of the last 90 days per category."""
    import psycopg

    until = dt.datetime.combine(AS_OF, dt.time()) + dt.timedelta(days=1)
    popular: dict[str, list[int]] = defaultdict(list)
    with psycopg.connect(pg_url) as db:
        for category, product, _ in db.execute(_SEED_POPULAR, {"since": until - dt.timedelta(days=90), "until": until}):
            if len(popular[category]) < 50:
                popular[category].append(product)
    return popular


def _seed_customer(local: threading.local, pg_url: str, redis_url: str, popular: dict, customer: int) -> None:
    """The seed's per-customer body: one query, Python scoring, one SETEX, 25 INSERTs."""
    import psycopg
    import redis

    if not hasattr(local, "db"):
        local.db, local.redis = psycopg.connect(pg_url), redis.from_url(redis_url)
    until = dt.datetime.combine(AS_OF, dt.time()) + dt.timedelta(days=1)
    history = local.db.execute(_SEED_HISTORY, {"customer": customer, "until": until}).fetchall()
    dates, quantities, categories = defaultdict(list), defaultdict(list), set()
    for product, created, quantity, category in history:
        dates[product].append(created)
        quantities[product].append(quantity)
        categories.add(category)
    scores = {}
    for product, seen in dates.items():
        gaps = [(b - a).days for a, b in zip(seen, seen[1:])]
        cycle = sum(gaps) / len(gaps) if gaps else 30.0
        since = (until - seen[-1]).days
        scores[product] = (len(seen) / (1 + len(seen))) * min(1.0, since / max(cycle, 1.0))
    for category in categories:
        for rank, product in enumerate(popular.get(category, [])):
            scores.setdefault(product, 0.5 / (rank + 1))
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:25]
    doc = {"customer_id": customer, "week": WEEK, "recommendations": [
        {"product_id": p, "score": round(s, 4), "rank": r + 1} for r, (p, s) in enumerate(top)]}
    local.redis.set(f"seed:{WEEK}:{customer}", json.dumps(doc), ex=691200)
    with local.db.cursor() as cur:
        cur.execute('DELETE FROM "WeeklyRecommendation" WHERE "Week" = %s AND "CustomerID" = %s', ("seed", customer))
        for rank, (product, score) in enumerate(top):
            cur.execute('INSERT INTO "WeeklyRecommendation" VALUES (%s, %s, %s, %s, %s, %s, %s)',
                        (customer, "seed", product, rank + 1, min(score, 1.0), "seed", until))
    local.db.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="active customers to aim for")
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--baseline-customers", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1, help="shards at a time")
    parser.add_argument("--reuse-data", action="store_true",
                        help="keep the data of the previous run of this benchmark (same sizes) instead of loading anew")
    args = parser.parse_args()

    services = bench_services("nightshift_bench_recs", fresh=not args.reuse_data)
    from include.jobs import weekly_recs as job
    from include.runtime.database import Database

    if not args.reuse_data:
        load_synthetic_orders(customers=int(args.customers / _ACTIVE_SHARE), products=args.products,
                              start="2023-01-02", end="2024-12-30", seed=9)

    run = job.RecsRun.from_params({"as_of_date": AS_OF.isoformat(), "shard_count": args.shards}, AS_OF,
                                  dt.date.today(), "bench")
    started = time.monotonic()
    shards = job.plan(run)
    prepared = job.prepare(run)
    prepared_at = time.monotonic()
    with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("fork")) as pool:
        stats = list(pool.map(job.process_shard, [run] * len(shards), shards, [prepared["model_dir"]] * len(shards)))
    summary = job.validate(run, stats)
    job.publish(run, summary, job.feedback(run), None)
    e2e_seconds = time.monotonic() - started
    customers = summary["customers"]
    shard_seconds = [s["seconds"] for s in stats]
    say(f"end to end: {customers:,} customers in {e2e_seconds:.1f}s ({customers / e2e_seconds:.0f}/s); "
        f"prepare {prepared_at - started:.1f}s, slowest shard {max(shard_seconds):.1f}s")
    peak_ours = peak_memory_mb()

    with Database("source_db") as db:
        active = db.frame("active_customers", run.query_params())["customer_id"].to_numpy()
    sample = np.random.default_rng(0).choice(active, size=min(args.baseline_customers, len(active)), replace=False)
    local = threading.local()
    seed_started = time.monotonic()
    popular = _seed_popular(services.postgres_url)
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda c: _seed_customer(local, services.postgres_url, services.redis_url, popular, int(c)),
                      sample))
    seed_seconds = time.monotonic() - seed_started
    seed_rate = len(sample) / seed_seconds
    say(f"seed baseline: {len(sample)} customers in {seed_seconds:.1f}s ({seed_rate:.1f}/s)")

    e2e_rate = customers / e2e_seconds
    emit({"benchmark": "weekly_recs", "active_customers": customers, "products": args.products,
          "shards": len(shards), "parallel_shards": args.parallel, "order_lines_trained": prepared["order_lines"],
          "end_to_end": {"seconds": round(e2e_seconds, 2), "customers_per_s": round(e2e_rate, 1),
                         "prepare_seconds": round(prepared_at - started, 2),
                         "shard_seconds_max": max(shard_seconds), "shard_seconds_mean": round(float(np.mean(shard_seconds)), 2),
                         "coverage": summary["coverage"], "recommendations": summary["recommendations"]},
          "seed_baseline": {"customers": len(sample), "seconds": round(seed_seconds, 2),
                            "customers_per_s": round(seed_rate, 2), "threads": SEED_THREADS,
                            "projected_seconds_for_all": round(customers / seed_rate, 1)},
          "ratio_end_to_end_vs_seed": round(e2e_rate / seed_rate, 1),
          "target_seconds": 120, "target_ratio": 100, "peak_memory_mb": peak_ours,
          "peak_memory_mb_shard_workers": peak_memory_mb(children=True)})
    services.stop()


if __name__ == "__main__":
    main()

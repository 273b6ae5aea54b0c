"""Benchmark: weekly_recs' shard path against a seed-style per-customer baseline.

    python -m bench.weekly_recs --customers 100000 --products 50000 [--shards 20] [--baseline-customers 100]
        [--history-only-customers 2000]

Same synthetic data, same PostgreSQL and Redis, one run:
- end_to_end: plan, prepare and every shard of the job (one history query per 5,000 customers,
  the recommender scoring 2,000 at a time, pipelined SETs, the backup rows copied in one
  transaction); prepare in a process of its own and the shards `--parallel` at a time in worker
  processes, as an executor with that many slots runs mapped tasks (default: one per core), each
  reporting its peak memory;
- seed_baseline: the seed's design, a thread pool of 4 walking active customers, each with one
  query, a Python scoring pass, one SETEX and row-by-row INSERTs, on a sample of customers. The
  query returns the customer's history and, as a per-customer script computes its collaborative
  part, the products most often bought together with the customer's products in the last 90 days;
  the scoring blends repeat cycles, those co-purchases and the popular items of the customer's
  categories (a list read once at start). Another sample runs with the history alone
  (seed_baseline_history_only: no collaborative part, the lighter baseline of earlier
  measurements), to show what the co-purchases cost a per-customer design.
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

from bench._common import bench_services, emit, keep_argument, load_synthetic_orders, peak_memory_mb, say

AS_OF = dt.date(2024, 12, 29)
WEEK = "2024-W52"
SEED_THREADS = 4
_ACTIVE_SHARE = 0.74  # share of generated customers active in the last 90 days (measured on this generator)
_SEED_HISTORY = """
SELECT 'history' AS kind, oi."ProductID", o."Created", oi."Quantity", p."Category"
FROM "ClientAgreement" ca JOIN "Order" o ON o."ClientAgreementID" = ca."ID"
JOIN "OrderItem" oi ON oi."OrderID" = o."ID" JOIN "Product" p ON p."ID" = oi."ProductID"
WHERE ca."ClientID" = %(customer)s AND o."Created" < %(until)s ORDER BY o."Created"
"""
_SEED_HISTORY_AND_ALSO_BOUGHT = """
WITH mine AS (
    SELECT oi."ProductID" AS product_id, o."Created" AS created, oi."Quantity" AS quantity, p."Category" AS category
    FROM "ClientAgreement" ca JOIN "Order" o ON o."ClientAgreementID" = ca."ID"
    JOIN "OrderItem" oi ON oi."OrderID" = o."ID" JOIN "Product" p ON p."ID" = oi."ProductID"
    WHERE ca."ClientID" = %(customer)s AND o."Created" < %(until)s
), also AS (
    SELECT other."ProductID" AS product_id, COUNT(*) AS together
    FROM "OrderItem" seen
    JOIN "Order" o ON o."ID" = seen."OrderID"
    JOIN "OrderItem" other ON other."OrderID" = seen."OrderID" AND other."ProductID" <> seen."ProductID"
    WHERE seen."ProductID" IN (SELECT product_id FROM mine) AND o."Created" >= %(since)s AND o."Created" < %(until)s
    GROUP BY other."ProductID" ORDER BY together DESC LIMIT 100
)
(SELECT 'history', product_id, created, quantity, category FROM mine ORDER BY created)
UNION ALL
SELECT 'also', product_id, NULL, together, NULL FROM also
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


def _seed_customer(local: threading.local, pg_url: str, redis_url: str, popular: dict, query: str,
                   customer: int) -> None:
    """The seed's per-customer body: one query, Python scoring, one SETEX, 25 INSERTs."""
    import psycopg
    import redis

    if not hasattr(local, "db"):
        local.db, local.redis = psycopg.connect(pg_url), redis.from_url(redis_url)
    until = dt.datetime.combine(AS_OF, dt.time()) + dt.timedelta(days=1)
    rows = local.db.execute(query, {"customer": customer, "until": until,
                                    "since": until - dt.timedelta(days=90)}).fetchall()
    dates, quantities, categories, also = defaultdict(list), defaultdict(list), set(), {}
    for kind, product, created, quantity, category in rows:
        if kind == "also":
            also[product] = quantity
            continue
        dates[product].append(created)
        quantities[product].append(quantity)
        categories.add(category)
    scores, sources = {}, {}
    for product, seen in dates.items():
        gaps = [(b - a).days for a, b in zip(seen, seen[1:])]
        cycle = sum(gaps) / len(gaps) if gaps else 30.0
        since = (until - seen[-1]).days
        scores[product], sources[product] = (len(seen) / (1 + len(seen))) * min(1.0, since / max(cycle, 1.0)), "repeat"
    most = max(also.values(), default=1)
    for product, together in also.items():
        if product not in scores:
            scores[product], sources[product] = 0.8 * together / most, "collaborative"
    for category in categories:
        for rank, product in enumerate(popular.get(category, [])):
            if product not in scores:
                scores[product], sources[product] = 0.5 / (rank + 1), "discovery"
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:25]
    doc = {"customer_id": customer, "week": WEEK, "recommendations": [
        {"product_id": p, "score": round(s, 4), "rank": r + 1, "source": sources[p]} for r, (p, s) in enumerate(top)]}
    local.redis.set(f"seed:{WEEK}:{customer}", json.dumps(doc), ex=691200)
    with local.db.cursor() as cur:
        cur.execute('DELETE FROM "WeeklyRecommendation" WHERE "Week" = %s AND "CustomerID" = %s', ("seed", customer))
        for rank, (product, score) in enumerate(top):
            cur.execute('INSERT INTO "WeeklyRecommendation" VALUES (%s, %s, %s, %s, %s, %s, %s)',
                        (customer, "seed", product, rank + 1, min(score, 1.0), sources[product], until))
    local.db.commit()


def _measured(step, *args) -> dict:
    """A step of the job (prepare, process_shard) in a worker process; its result and the
    worker's peak memory so far."""
    return {**step(*args), "peak_memory_mb": peak_memory_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="active customers to aim for")
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--baseline-customers", type=int, default=100,
                        help="sample size of the co-purchase baseline (well under 1 customer/s); "
                             "0 skips it")
    parser.add_argument("--history-only-customers", type=int, default=2000,
                        help="sample size of the history-only baseline (hundreds of customers/s); 0 skips it")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1, help="shards at a time")
    parser.add_argument("--reuse-data", action="store_true",
                        help="use the data a previous run left with --keep (same sizes) instead of loading anew")
    keep_argument(parser)
    args = parser.parse_args()

    services = bench_services("nightshift_bench_recs", fresh=not args.reuse_data, keep=args.keep)
    from include.jobs import weekly_recs as job
    from include.runtime.database import Database

    if not args.reuse_data:
        load_synthetic_orders(customers=int(args.customers / _ACTIVE_SHARE), products=args.products,
                              start="2023-01-02", end="2024-12-30", seed=9)

    run = job.RecsRun.from_params({"as_of_date": AS_OF.isoformat(), "shard_count": args.shards}, AS_OF,
                                  dt.date.today(), "bench")
    # prepare and the shards run in processes forked from a small server process, not from this
    # one (which generated the data): their peak memory is their own, as in an executor's task processes
    forkserver = multiprocessing.get_context("forkserver")
    started = time.monotonic()
    shards = job.plan(run)
    with ProcessPoolExecutor(1, mp_context=forkserver) as pool:
        prepared = pool.submit(_measured, job.prepare, run).result()
    prepared_at = time.monotonic()
    with ProcessPoolExecutor(args.parallel, mp_context=forkserver) as pool:
        n = len(shards)
        stats = list(pool.map(_measured, [job.process_shard] * n, [run] * n, shards, [prepared["model_dir"]] * n))
    worker_peak_mb = max(s.pop("peak_memory_mb") for s in stats)
    summary = job.validate(run, stats)
    with ProcessPoolExecutor(args.parallel, mp_context=forkserver) as pool:
        published = list(pool.map(job.publish_shard, [run] * len(shards), shards))
    job.finalize(run, summary, job.feedback(run), None)
    e2e_seconds = time.monotonic() - started
    customers = summary["customers"]
    shard_seconds = [s["seconds"] for s in stats]
    say(f"end to end: {customers:,} customers in {e2e_seconds:.1f}s ({customers / e2e_seconds:.0f}/s); "
        f"prepare {prepared_at - started:.1f}s ({prepared['peak_memory_mb']:,.0f} MB), slowest shard "
        f"{max(shard_seconds):.1f}s ({worker_peak_mb:,.0f} MB), slowest publish "
        f"{max(p['seconds'] for p in published):.1f}s")

    with Database("source_db") as db:
        active = db.frame("active_customers", run.query_params())["customer_id"].to_numpy()
    # a sample of its own for each baseline, so neither reads histories the other left in the cache
    sizes = [args.baseline_customers, args.history_only_customers]
    if sum(sizes) > len(active):
        parser.error(f"the baselines' samples ({sum(sizes)} customers) exceed the {len(active)} active customers")
    drawn = np.random.default_rng(0).choice(active, size=sum(sizes), replace=False)
    samples = np.split(drawn, [sizes[0]])
    e2e_rate = customers / e2e_seconds
    baselines = {}
    for (name, query), sample in zip((("seed_baseline", _SEED_HISTORY_AND_ALSO_BOUGHT),
                                      ("seed_baseline_history_only", _SEED_HISTORY)), samples):
        if not len(sample):
            continue
        local = threading.local()
        seed_started = time.monotonic()
        popular = _seed_popular(services.postgres_url)
        startup = time.monotonic() - seed_started
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            list(pool.map(lambda c: _seed_customer(local, services.postgres_url, services.redis_url, popular, query,
                                                   int(c)), sample))
        seconds = time.monotonic() - seed_started - startup
        rate = len(sample) / seconds
        projected = startup + customers / rate
        say(f"{name}: start-up {startup:.1f}s, then {len(sample)} customers in {seconds:.1f}s ({rate:.1f}/s); "
            f"all {customers:,} customers would take {projected:,.0f}s: ours is {projected / e2e_seconds:.0f}x faster")
        baselines[name] = {"customers": len(sample), "startup_seconds": round(startup, 2), "seconds": round(seconds, 2),
                           "customers_per_s": round(rate, 2), "threads": SEED_THREADS,
                           "projected_seconds_for_all": round(projected, 1),
                           "ratio_end_to_end_vs_it": round(projected / e2e_seconds, 1)}

    emit({"benchmark": "weekly_recs", "active_customers": customers, "products": args.products,
          "shards": len(shards), "parallel_shards": args.parallel, "order_lines_trained": prepared["order_lines"],
          "end_to_end": {"seconds": round(e2e_seconds, 2), "customers_per_s": round(e2e_rate, 1),
                         "prepare_seconds": round(prepared_at - started, 2),
                         "shard_seconds_max": max(shard_seconds), "shard_seconds_mean": round(float(np.mean(shard_seconds)), 2),
                         "coverage": summary["coverage"], "recommendations": summary["recommendations"]},
          **baselines, "ratio_end_to_end_vs_seed": baselines.get("seed_baseline", {}).get("ratio_end_to_end_vs_it"),
          "target_seconds": 120, "target_ratio": 100, "peak_memory_mb_prepare": prepared["peak_memory_mb"],
          "peak_memory_mb_shard_worker": worker_peak_mb,
          "customers_per_shard_max": max(s["customers"] for s in stats)})
    services.stop()


if __name__ == "__main__":
    main()

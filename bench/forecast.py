"""Benchmark: forecast_worker's shard path against a seed-style per-product baseline.

    python -m bench.forecast --products 10000 [--customers 25000] [--baseline-products 500]

Same synthetic data (3+ years of orders), same PostgreSQL and Redis, one run:
- engine: the forecast engine alone (fit the pooled state, forecast) on every product's weekly
  panel, already in memory;
- end_to_end: the job's steps as the DAG runs them: plan, prepare (the pooled state over every
  product), every shard's process (one query, vectorised forecast, staged documents), validate,
  every shard's publish (pipelined SETs) and finalize; shards one after another in this process;
- seed_baseline: the seed's design, a multiprocessing pool of 10, one query, one statsmodels
  fit and one SET per product, on a sample of products (it is too slow to run on all).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import time
import warnings

import numpy as np

from bench._common import bench_services, emit, keep_argument, load_synthetic_orders, peak_memory_mb, say

AS_OF = dt.date(2024, 12, 29)
SEED_WORKERS = 10
_SEED_QUERY = """
SELECT CAST(date_trunc('week', o."Created") AS date) AS week_start, sum(oi."Quantity") AS quantity,
       count(DISTINCT ca."ClientID") AS customers
FROM "OrderItem" oi JOIN "Order" o ON o."ID" = oi."OrderID"
JOIN "ClientAgreement" ca ON ca."ID" = o."ClientAgreementID"
WHERE oi."ProductID" = %(product_id)s AND o."Created" >= %(start)s AND o."Created" < %(until)s
GROUP BY 1 ORDER BY 1
"""
_seed: dict = {}


def _seed_init(pg_url: str, redis_url: str) -> None:
    import psycopg
    import redis

    _seed["db"] = psycopg.connect(pg_url)
    _seed["redis"] = redis.from_url(redis_url)


def _seed_forecast_one(product_id: int) -> bool:
    """The seed's worker body: one query, one statsmodels fit, one SET, for one product."""
    import pandas as pd
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    rows = _seed["db"].execute(_SEED_QUERY, {"product_id": product_id, "start": dt.datetime(2019, 1, 1),
                                             "until": dt.datetime.combine(AS_OF, dt.time()) + dt.timedelta(days=1)}
                               ).fetchall()
    if len(rows) < 4:
        return False
    weekly = pd.Series([float(r[1]) for r in rows], index=pd.DatetimeIndex([r[0] for r in rows]))
    weekly = weekly.asfreq("W-MON", fill_value=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seasonal = "add" if len(weekly) >= 104 else None
        fit = ExponentialSmoothing(weekly, trend="add", seasonal=seasonal, seasonal_periods=52 if seasonal else None,
                                   initialization_method="estimated").fit()
        forecast = np.clip(fit.forecast(12).to_numpy(), 0, None)
    doc = {"product_id": product_id, "as_of_date": AS_OF.isoformat(), "forecast_weeks": 12,
           "predictions": [{"week_start": str(d.date()), "predicted_quantity": round(float(q), 2)}
                           for d, q in zip(fit.forecast(12).index, forecast)]}
    _seed["redis"].set(f"seed:forecast:{product_id}", json.dumps(doc), ex=604800)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=10_000, help="forecastable products to aim for")
    parser.add_argument("--customers", type=int, default=None, help="default: 2.5 per product")
    parser.add_argument("--baseline-products", type=int, default=500)
    parser.add_argument("--shards", type=int, default=10)
    keep_argument(parser)
    args = parser.parse_args()
    customers = args.customers or int(args.products * 2.5)

    services = bench_services("nightshift_bench_forecast", keep=args.keep)
    from include.jobs import forecast_worker as job
    from include.models.forecast import ForecastEngine
    from include.runtime.database import Database

    order_lines = load_synthetic_orders(customers=customers, products=int(args.products * 1.1), start="2021-10-04",
                                        end="2024-12-30", seed=5)

    run = job.ForecastRun.from_params({"as_of_date": AS_OF.isoformat(), "shard_count": args.shards}, AS_OF,
                                      dt.date.today(), "bench")
    # end to end: the job's own functions, as the DAG calls them
    started = time.monotonic()
    shards = job.plan(run)
    model_dir = job.prepare(run, shards)["model_dir"]
    stats = [job.process_shard(run, s, f"bench:{s['shard']}", model_dir) for s in shards]
    summary = job.validate(run, stats)
    job.finalize(run, summary, [job.publish(run, s) for s in shards], None)
    e2e_seconds = time.monotonic() - started
    products = summary["products"]
    say(f"end to end: {products:,} products in {e2e_seconds:.1f}s ({products / e2e_seconds:.0f}/s)")

    # the engine alone, on the same products' weekly history already in memory
    with Database("source_db") as db:
        weekly = db.frame("forecast_weekly_history", run.query_params({"shard": 0, "of": 1, "cutoff_orders": 0,
                                                                        "cutoff_product": 0}))
    panel = job.history_panel(weekly, run)
    started = time.monotonic()
    result = ForecastEngine(horizon=12).fit(panel).forecast(panel)
    engine_seconds = time.monotonic() - started
    say(f"engine alone: {len(result.products):,} products in {engine_seconds:.1f}s; "
        f"models {result.products['model_type'].value_counts().to_dict()}")

    # the seed's design on a sample of the same products
    sample = np.random.default_rng(0).choice(weekly["product_id"].unique(), size=min(args.baseline_products, products),
                                             replace=False).tolist()
    started = time.monotonic()
    with multiprocessing.get_context("fork").Pool(SEED_WORKERS, _seed_init,
                                                  (services.postgres_url, services.redis_url)) as pool:
        done = sum(pool.imap_unordered(_seed_forecast_one, sample, chunksize=1))
    seed_seconds = time.monotonic() - started
    seed_rate = len(sample) / seed_seconds
    say(f"seed baseline: {len(sample)} products in {seed_seconds:.1f}s ({seed_rate:.1f}/s, {done} forecast)")

    e2e_rate = products / e2e_seconds
    emit({"benchmark": "forecast", "products": products, "order_lines": order_lines, "customers": customers,
          "shards": len(shards), "end_to_end": {"seconds": round(e2e_seconds, 2), "products_per_s": round(e2e_rate, 1),
                                                "successful": summary["successful"], "failed": summary["failed"],
                                                "no_forecast": summary["no_forecast"]},
          "engine": {"seconds": round(engine_seconds, 2), "products_per_s": round(len(result.products) / engine_seconds, 1)},
          "seed_baseline": {"products": len(sample), "seconds": round(seed_seconds, 2),
                            "products_per_s": round(seed_rate, 2), "workers": SEED_WORKERS,
                            "projected_seconds_for_all": round(products / seed_rate, 1)},
          "ratio_end_to_end_vs_seed": round(e2e_rate / seed_rate, 1),
          "target_seconds": 60, "target_ratio": 20,
          "peak_memory_mb": peak_memory_mb(), "peak_memory_mb_seed_workers": peak_memory_mb(children=True)})
    services.stop()


if __name__ == "__main__":
    main()

"""Benchmark: the popularity job's set-based SQL against a pandas implementation of the same scores.

    python -m bench.popularity [--products 100000] [--events 10000000] [--users 1000000] [--days 100]

Synthetic events (Zipf-like product popularity, 5/15/80 percent purchase/cart/view, spread over
`days` before as_of so some fall outside the 90-day window) are COPYed in binary. Measured:
- sql: check_inputs (the pre-checks) and score (one UPDATE of every product's popularity_score
  plus the post-checks, one transaction), then publish (Redis sorted sets);
- pandas: the same computation in Python: the window's events read into a DataFrame (COPY)
  and include.models.popularity.popularity_scores;
the scores of both are compared. Targets: 5 s for scoring (the seed's: 30 s).
"""
from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np

from bench import _events
from bench._common import bench_services, emit, keep_argument, peak_memory_mb, say

AS_OF = dt.datetime(2024, 12, 29, 23)
TARGET_S, SEED_TARGET_S = 5.0, 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=100.0, help="events spread over this many days before as_of")
    parser.add_argument("--repeats", type=int, default=2, help="scoring runs (the best is reported)")
    parser.add_argument("--skip-pandas", action="store_true")
    keep_argument(parser)
    args = parser.parse_args()

    services = bench_services("nightshift_bench_popularity", keep=args.keep)
    try:
        from include.jobs import popularity as job
        from include.models.popularity import Decay, popularity_scores
        from include.runtime.database import Database
        from include.runtime.schema import migrate

        result: dict = {"benchmark": "popularity", "products": args.products, "events": args.events,
                        "users": args.users, "days": args.days, "as_of": AS_OF.isoformat(),
                        "target_s": TARGET_S, "seed_target_s": SEED_TARGET_S}
        with Database("source_db") as db:
            migrate(db)
            say(f"generating {args.events:,} events over {args.products:,} products")
            started = time.monotonic()
            catalogue = _events.products(args.products)
            columns = _events.events(args.events, args.users, args.products, AS_OF, args.days)
            result["generate_s"] = round(time.monotonic() - started, 2)
            result.update(_events.load_catalogue_and_events(db, catalogue, columns, min(args.users, 100_000)))
            del columns

            run = job.PopularityRun.from_params({"as_of": AS_OF.isoformat()}, AS_OF, AS_OF)
            started = time.monotonic()
            input_stats = job.check_inputs(run)
            result["sql_check_inputs_s"] = round(time.monotonic() - started, 3)
            result["events_in_window"] = input_stats["events_in_window"]
            timings = []
            for i in range(args.repeats):
                if i:  # a changed score everywhere, as on a real 5-minute tick
                    run = job.PopularityRun.from_params({"as_of": (AS_OF - dt.timedelta(minutes=5 * i)).isoformat()},
                                                        AS_OF, AS_OF)
                started = time.monotonic()
                stats = job.score(run, input_stats)
                timings.append(time.monotonic() - started)
                say(f"  sql score run {i + 1}: {timings[-1]:.2f}s ({stats['updated']:,} products updated)")
            result["sql_score_s"] = round(min(timings), 3)
            result["sql_score_runs_s"] = [round(t, 3) for t in timings]
            started = time.monotonic()
            published = job.publish(run, stats)
            result["sql_publish_s"] = round(time.monotonic() - started, 3)
            result["redis_keys"] = published["redis_keys"]
            result["sql_total_s"] = round(result["sql_check_inputs_s"] + result["sql_score_s"] + result["sql_publish_s"], 3)
            result["meets_target"] = result["sql_score_s"] <= TARGET_S

            if not args.skip_pandas:
                decay = Decay()
                started = time.monotonic()
                frame = _events.read_window(db, decay.since(run.as_of), run.as_of)
                read = time.monotonic() - started
                started = time.monotonic()
                expected = popularity_scores(frame, catalogue, run.as_of, decay)
                compute = time.monotonic() - started
                result.update({"pandas_read_s": round(read, 3), "pandas_compute_s": round(compute, 3),
                               "pandas_total_s": round(read + compute, 3),
                               "speedup_vs_pandas": round((read + compute) / result["sql_score_s"], 2)})
                say(f"  pandas: read {read:.2f}s + compute {compute:.2f}s")
                with db.conn.cursor() as cur:
                    cur.execute('SELECT "ID", popularity_score FROM "Product" ORDER BY "ID"')
                    got = np.array([r[1] for r in cur.fetchall()])
                db.conn.commit()
                want = expected.sort_values("product_id")["score"].to_numpy()
                result["max_rel_diff_vs_pandas"] = float(np.max(np.abs(got - want) / np.maximum(want, 1e-12)))
        result["peak_memory_mb"] = peak_memory_mb()
        say(f"popularity: SQL scoring {result['sql_score_s']}s (target {TARGET_S}s, seed target {SEED_TARGET_S}s)"
            + (f", pandas {result['pandas_total_s']}s" if "pandas_total_s" in result else ""))
        emit(result)
    finally:
        services.stop()


if __name__ == "__main__":
    main()

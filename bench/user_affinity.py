"""Benchmark: user_affinity's full rebuild and incremental run against pandas doing the same.

    python -m bench.user_affinity [--users 1000000] [--events-per-user 10] [--products 100000]
                                  [--changed-fraction 0.01]

Synthetic events over `days` before as_of (binary COPY). Measured:
- full rebuild: compute (the changed-user set, the window's events read in one bulk query and
  scored by include/models/affinity.py, user_category_affinity and user_profiles replaced by COPY
  with the post-checks in one transaction) and publish (every user's Redis hash, the watermark);
- incremental: new events for `changed_fraction` of the users in the day after as_of, then the
  run as of a day later; its time should be proportional to the users recomputed;
- pandas: the window's events with their products read into a DataFrame (COPY) and the plain
  pandas reference, include.models.popularity.category_affinity + user_profiles.
Targets: full rebuild of 1,000,000 users in 60 s (the seed's: 5 minutes).
"""
from __future__ import annotations

import argparse
import datetime as dt
import time

from bench import _events
from bench._common import bench_services, emit, keep_argument, peak_memory_mb, say

AS_OF = dt.datetime(2024, 12, 29, 23)
TARGET_S, SEED_TARGET_S = 60.0, 300.0


def _timed_run(job, as_of: dt.datetime, full: bool) -> dict:
    run = job.AffinityRun.from_params({"as_of": as_of.isoformat(), "full_rebuild": full}, as_of, as_of,
                                      job.read_watermark(), f"bench:{as_of.isoformat()}")
    started = time.monotonic()
    input_stats = job.check_inputs(run)
    checked = time.monotonic()
    stats = job.compute(run, input_stats)
    computed = time.monotonic()
    summary = job.publish(run, stats)
    done = time.monotonic()
    return {"check_inputs_s": round(checked - started, 3), "compute_s": round(computed - checked, 3),
            "publish_s": round(done - computed, 3), "total_s": round(done - started, 3),
            "users_recomputed": summary["users_recomputed"], "affinity_rows": summary["affinity_rows"],
            "redis_hashes": summary["redis_hashes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=float, default=10.0)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=200.0, help="events spread over this many days before as_of")
    parser.add_argument("--changed-fraction", type=float, default=0.01)
    parser.add_argument("--favourite-share", type=float, default=0.8,
                        help="share of a user's events in its 3 favourite categories")
    parser.add_argument("--skip-pandas", action="store_true")
    keep_argument(parser)
    args = parser.parse_args()
    n_events = int(args.users * args.events_per_user)

    services = bench_services("nightshift_bench_user_affinity", keep=args.keep)
    try:
        import redis

        from include.jobs import user_affinity as job
        from include.models.popularity import Decay, category_affinity, user_profiles
        from include.runtime.database import Database
        from include.runtime.schema import migrate

        result: dict = {"benchmark": "user_affinity", "users": args.users, "events": n_events,
                        "favourite_share": args.favourite_share,
                        "products": args.products, "days": args.days, "as_of": AS_OF.isoformat(),
                        "target_full_s": TARGET_S, "seed_target_full_s": SEED_TARGET_S}
        with Database("source_db") as db:
            migrate(db)
            say(f"generating {n_events:,} events of {args.users:,} users")
            started = time.monotonic()
            catalogue = _events.products(args.products)
            columns = _events.events(n_events, args.users, args.products, AS_OF, args.days,
                                     catalogue=catalogue, favourite_share=args.favourite_share)
            result["generate_s"] = round(time.monotonic() - started, 2)
            result.update(_events.load_catalogue_and_events(db, catalogue, columns, 1000))
            del columns

            say("full rebuild")
            full = _timed_run(job, AS_OF, full=True)
            result["full"] = full
            result["meets_target"] = full["total_s"] <= TARGET_S
            say(f"  full rebuild: {full}")

            changed = max(1, int(args.users * args.changed_fraction))
            later = AS_OF + dt.timedelta(days=1)
            extra = _events.events(changed * 3, changed, args.products, later, 1.0, seed=5, catalogue=catalogue,
                                   favourite_share=args.favourite_share)
            extra["user_id"] = extra["user_id"] * (args.users // changed)  # spread over the id range
            _events.copy_events(db.conn, extra)
            say("incremental run")
            incremental = _timed_run(job, later, full=False)
            incremental["users_with_new_events"] = int(len(set(extra["user_id"].tolist())))
            result["incremental"] = incremental
            result["incremental_vs_full_time"] = round(incremental["total_s"] / full["total_s"], 4)
            result["incremental_vs_full_users"] = round(incremental["users_recomputed"] / max(full["users_recomputed"], 1), 4)
            say(f"  incremental: {incremental}")

            if not args.skip_pandas:
                decay = Decay(30.0, 180.0)
                started = time.monotonic()
                frame = _events.read_window(db, decay.since(later), later, with_products=True)
                read = time.monotonic() - started
                products = frame[["product_id", "category", "brand", "price"]].drop_duplicates("product_id")
                events = frame[["user_id", "product_id", "event_type", "ts"]]
                del frame
                started = time.monotonic()
                affinity = category_affinity(events, products, later, decay)
                profiles = user_profiles(events, products, later, decay)
                compute = time.monotonic() - started
                result["pandas"] = {"read_s": round(read, 3), "compute_s": round(compute, 3),
                                    "total_s": round(read + compute, 3), "affinity_rows": len(affinity),
                                    "profiles": len(profiles)}
                result["full_compute_speedup_vs_pandas"] = round((read + compute) / full["compute_s"], 2)
                say(f"  pandas: {result['pandas']}")
            result["redis_keys"] = redis.from_url(services.redis_url).dbsize()
        result["peak_memory_mb"] = peak_memory_mb()
        say(f"user_affinity: full rebuild {full['total_s']}s (target {TARGET_S}s, seed target {SEED_TARGET_S}s), "
            f"incremental {incremental['total_s']}s for {incremental['users_recomputed']} users")
        emit(result)
    finally:
        services.stop()


if __name__ == "__main__":
    main()

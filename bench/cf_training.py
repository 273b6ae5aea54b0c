"""Benchmark: cf_training's compute path (matrix, ALS fit, holdout + shadow evaluation, versioned save).

    python -m bench.cf_training [--users 1000000 --items 100000 --interactions 20000000] [--similarities]

Synthetic planted data generated in memory (the SQL read is not timed: on PostgreSQL it is one
aggregate query read through `Database.bulk_frame`): users belong to communities that buy mostly their
community's items (Zipf popularity inside), 10% of the pairs fall in the holdout window. The run
calls the job's own `fit_and_evaluate` twice: a cheap first version (16 factors, 1 sweep) is
promoted, then the timed full run is shadow-evaluated against it (both evaluations timed). `--similarities` also times the
MySanta top-20 similar users over all users (IVF above 50,000 users).
Targets: the whole job at 1M users x 100K items x 20M interactions in <= 10 minutes on 2 cores
(seed target: 1 hour).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench._common import emit, peak_memory_mb, say

SEED_TARGET_SECONDS = 3600
TARGET_SECONDS = 600


def synthetic_interactions(users: int, items: int, interactions: int, communities: int = 500, own: float = 0.8,
                           holdout: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """(user_id, product_id, holdout, n) rows with planted communities; vectorised."""
    rng = np.random.default_rng(seed)
    user_comm = rng.integers(0, communities, users)
    item_comm = rng.integers(0, communities, items)
    order = np.argsort(item_comm, kind="stable")
    bounds = np.searchsorted(item_comm[order], np.arange(communities + 1))
    per_user = rng.poisson(interactions / users, users)
    user = np.repeat(np.arange(users), per_user)
    total = len(user)
    comm = user_comm[user]
    # inside a community: Zipf-like rank via a power of a uniform draw
    size = bounds[comm + 1] - bounds[comm]
    rank = np.minimum((size * rng.random(total) ** 2.0).astype(np.int64), np.maximum(size - 1, 0))
    item = order[np.minimum(bounds[comm] + rank, items - 1)]
    glob = rng.random(total) > own
    item[glob] = np.minimum((items * rng.random(int(glob.sum())) ** 3.0).astype(np.int64), items - 1)
    return pd.DataFrame({"user_id": user.astype(np.int64) + 1, "product_id": item.astype(np.int64) + 1,
                         "holdout": (rng.random(total) < holdout).astype(np.int8),
                         "n": rng.geometric(0.6, total).astype(np.float64)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--eval-users", type=int, default=10_000)
    parser.add_argument("--similarities", action="store_true", help="also time top-20 similar users for all users")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nightshift-bench-cf-"))
    os.environ.setdefault("ARTIFACT_ROOT", (root / "artifacts").as_uri())

    from include.jobs.cf_training import CFRun, fit_and_evaluate
    from include.runtime.model_store import ModelStore

    started = time.monotonic()
    orders = synthetic_interactions(args.users, args.items, args.interactions)
    say(f"data: {len(orders):,} interaction rows for {args.users:,} users x {args.items:,} items generated in "
        f"{time.monotonic() - started:.0f}s")
    run = CFRun(as_of=dt.date(2024, 12, 29), history_days=365, holdout_days=14, min_interactions=5,
                factors=args.factors, regularization=0.05, iterations=args.iterations, alpha=10.0, k=10,
                eval_users=args.eval_users, tolerance=0.02,
                weights={"order": 3.0, "purchase": 1.0, "add_to_cart": 0.5, "view": 0.1})
    store = ModelStore("cf_als", root=root / "artifacts")
    results = []
    # run 1 puts a cheap model live (1 sweep, 16 factors) so that run 2, the timed full job, includes
    # the shadow evaluation of a promoted model on the same holdout
    cheap = dataclasses.replace(run, factors=16, iterations=1)
    for attempt in range(2):
        t = time.monotonic()
        summary = fit_and_evaluate(cheap if attempt == 0 else run, orders, None, store=store)
        seconds = time.monotonic() - t
        if attempt == 0:
            store.promote(summary["version"], "bench: first version")
        say(f"run {attempt + 1}: {seconds:.0f}s (matrix {summary['matrix_seconds']}s, fit {summary['fit_seconds']}s, "
            f"evaluate {summary['evaluate_seconds']}s, save {summary['save_seconds']}s); "
            f"ndcg@10 {summary['metrics']['ndcg@10']}, promote: {summary['reason']}")
        results.append((seconds, summary))
    seconds, summary = results[1]
    out = {"benchmark": "cf_training", "users": args.users, "items": args.items, "interaction_rows": len(orders),
           "matrix_users": summary["users"], "matrix_items": summary["items"], "pairs": summary["pairs"],
           "factors": args.factors, "iterations": args.iterations, "eval_users": summary["metrics"]["users"],
           "seconds_first_run": round(results[0][0], 1), "seconds": round(seconds, 1),
           "matrix_seconds": summary["matrix_seconds"], "fit_seconds": summary["fit_seconds"],
           "evaluate_seconds_with_shadow": summary["evaluate_seconds"], "save_seconds": summary["save_seconds"],
           "metrics": summary["metrics"], "shadow_baseline_metrics": summary["baseline_metrics"],
           "promoted_second": summary["promote"],
           "target_seconds": TARGET_SECONDS, "seed_target_seconds": SEED_TARGET_SECONDS,
           "within_target": seconds <= TARGET_SECONDS, "ratio_to_seed_target": round(seconds / SEED_TARGET_SECONDS, 4)}
    if args.similarities:
        from include.models.vector_index import similar_rows

        arrays, _ = store.load(summary["version"])
        t = time.monotonic()
        rows, _ = similar_rows(arrays["user_factors"], 20)
        out["similar_users_seconds"] = round(time.monotonic() - t, 1)
        out["similar_users_rows"] = int((rows >= 0).sum())
        say(f"similar users: {out['similar_users_rows']:,} rows in {out['similar_users_seconds']}s")
    out["peak_memory_mb"] = peak_memory_mb()
    emit(out)


if __name__ == "__main__":
    main()

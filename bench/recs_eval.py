"""Temporal holdout evaluation of the recommender against baselines.

    python -m bench.recs_eval --data ../shared/data/online_retail.parquet [--cutoff DATE] [--test-weeks 4]

Train on orders before the cutoff (default: ``test-weeks`` weeks before the end of the data's
last full Monday-Sunday week), test on each customer's purchases in the following ``test-weeks``
weeks; customers with both train history and test purchases are evaluated. Hyperparameters of
the recommender, TIFU-KNN and ALS are chosen on a validation split inside the train period (train
before ``cutoff - test-weeks``, validate on the ``test-weeks`` before the cutoff); the test weeks
are never looked at until the chosen settings are refit on the full train period.
The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench import baselines_recs as bl  # noqa: E402
from include.datasets.online_retail import read_online_retail  # noqa: E402
from include.models.recommender import HybridRecommender  # noqa: E402

K = 25
METRICS = ("recall@25", "ndcg@25", "hit_rate@25", "recall_repeat@25", "recall_explore@25")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def default_cutoff(orders: pd.DataFrame, test_weeks: int) -> pd.Timestamp:
    last = orders["order_date"].max().normalize()
    # end (exclusive) of the last full Monday..Sunday week
    week_end = last - pd.Timedelta(days=last.weekday())
    if last.weekday() == 6:
        week_end = last + pd.Timedelta(days=1)
    return week_end - pd.Timedelta(weeks=test_weeks)


def split(orders, cutoff, test_weeks):
    train = orders[orders["order_date"] < cutoff]
    test = orders[(orders["order_date"] >= cutoff) & (orders["order_date"] < cutoff + pd.Timedelta(weeks=test_weeks))]
    customers = np.intersect1d(train["customer_id"].unique(), test["customer_id"].unique())
    return train, test, customers


def evaluate(recs: np.ndarray, customers: np.ndarray, train, test) -> dict:
    """recs: (n_customers, K) product ids aligned with ``customers``."""
    n = len(customers)
    idx = pd.Index(customers)
    t = test[test["customer_id"].isin(customers)].drop_duplicates(["customer_id", "product_id"])
    tu = idx.get_indexer(t["customer_id"])
    tkey = tu.astype(np.int64) * 10**10 + t["product_id"].to_numpy()
    seen = train[train["customer_id"].isin(customers)].drop_duplicates(["customer_id", "product_id"])
    skey = idx.get_indexer(seen["customer_id"]).astype(np.int64) * 10**10 + seen["product_id"].to_numpy()
    repeat = np.isin(tkey, skey)
    rkey = np.repeat(np.arange(n), recs.shape[1]) * 10**10 + recs.ravel()
    hit = np.isin(rkey, tkey).reshape(recs.shape) & (recs >= 0)
    n_test = np.bincount(tu, minlength=n)
    n_rep = np.bincount(tu[repeat], minlength=n)
    n_exp = n_test - n_rep
    rec_rep = np.isin(rkey, tkey[repeat]).reshape(recs.shape) & (recs >= 0)
    rec_exp = hit & ~rec_rep
    discount = 1.0 / np.log2(np.arange(2, recs.shape[1] + 2))
    idcg = np.cumsum(discount)[np.minimum(n_test, recs.shape[1]) - 1]
    out = {
        "recall@25": float(np.mean(hit.sum(1) / n_test)),
        "ndcg@25": float(np.mean((hit * discount).sum(1) / idcg)),
        "hit_rate@25": float(np.mean(hit.any(1))),
        "recall_repeat@25": float(np.mean(rec_rep.sum(1)[n_rep > 0] / n_rep[n_rep > 0])),
        "recall_explore@25": float(np.mean(rec_exp.sum(1)[n_exp > 0] / n_exp[n_exp > 0])),
    }
    return {k: round(v, 4) for k, v in out.items()}


def run_recommender(train, products, customers, cutoff, params, factors=None):
    model = HybridRecommender(top_n=K, **params)
    if factors is not None:
        model.fit(train, products, cutoff, item_factors=factors[0], factor_item_ids=factors[1])
    else:
        model.fit(train, products, cutoff)
    rec = model.recommend(train[train["customer_id"].isin(customers)], customers, cutoff)
    out = np.full((len(customers), K), -1, dtype=np.int64)
    out[pd.Index(customers).get_indexer(rec["customer_id"]), rec["rank"].to_numpy() - 1] = rec["product_id"]
    return out


RECOMMENDER_GRID = {
    "half_life_days": [60.0, 120.0, 365.0],
    "collab": [0.1, 0.2, 0.3],  # collaborative share of the repeat + collaborative weight
    "momentum_power": [0.3, 0.6, 1.0],
}
# similar and discovery weights per segment (fixed: they matter for the explore part of recall)
SIDE_WEIGHTS = {"loyal": (0.02, 0.02), "occasional": (0.03, 0.03), "dormant": (0.05, 0.05),
                "new": (0.10, 0.10)}


def recommender_params(half_life_days, collab, momentum_power, horizon_days):
    seg = {}
    for name, (sim, disc) in SIDE_WEIGHTS.items():
        core = 1.0 - sim - disc
        seg[name] = (core * (1 - collab), core * collab, sim, disc)
    return {"half_life_days": half_life_days, "momentum_power": momentum_power,
            "segment_weights": seg, "horizon_days": horizon_days}


def items_of(products, cutoff):
    return np.sort(products.loc[products["created_at"] <= cutoff, "product_id"].unique().astype(np.int64))


def tune(orders, products, cutoff, test_weeks):
    """Pick hyperparameters on the validation split that ends at ``cutoff``."""
    vcut = cutoff - pd.Timedelta(weeks=test_weeks)
    vtrain, vtest, vcust = split(orders, vcut, test_weeks)
    log(f"validation: train < {vcut.date()}, test {vcut.date()}..{cutoff.date()}, {len(vcust)} customers")
    chosen = {}
    keys = list(RECOMMENDER_GRID)
    best = (-1, None)
    for values in itertools.product(*RECOMMENDER_GRID.values()):
        cfg = dict(zip(keys, values))
        p = recommender_params(**cfg, horizon_days=7.0 * test_weeks)
        m = evaluate(run_recommender(vtrain, products, vcust, vcut, p), vcust, vtrain, vtest)
        score = m["recall@25"] + m["ndcg@25"]
        log(f"  recommender {cfg}: recall {m['recall@25']:.4f} ndcg {m['ndcg@25']:.4f}")
        if score > best[0]:
            best = (score, cfg)
    chosen["recommender"] = best[1]

    items = items_of(products, vcut)
    all_cust = np.sort(vtrain["customer_id"].unique())
    pos = pd.Index(all_cust).get_indexer(vcust)
    best = (-1, None)
    alphas = [0.2, 0.5, 0.7, 0.9]
    for m_size, rb, rg in itertools.product([3, 7], [0.9, 1.0], [0.6, 0.8]):
        vec = bl.tifu_vectors(vtrain, items, all_cust, m_size, rb, rg)
        nbrs = bl.tifu_neighbours(vec, 900)
        for k in [100, 300, 900]:
            for alpha, recs in zip(alphas, bl.tifu_knn_alphas(vec, items, K, k, alphas, nbrs)):
                m = evaluate(recs[pos], vcust, vtrain, vtest)
                score = m["recall@25"] + m["ndcg@25"]
                if score > best[0]:
                    best = (score, {"group_size": m_size, "within_decay": rb, "group_decay": rg,
                                    "k": k, "alpha": alpha})
    log(f"  tifu_knn best {best[1]} (recall+ndcg {best[0]:.4f})")
    chosen["tifu_knn"] = best[1]

    best = (-1, None)
    for factors, alpha in itertools.product([32, 64, 128], [1.0, 10.0, 40.0]):
        recs, _ = bl.als(vtrain, items, all_cust, K, factors=factors, alpha=alpha)
        m = evaluate(recs[pos], vcust, vtrain, vtest)
        score = m["recall@25"] + m["ndcg@25"]
        if score > best[0]:
            best = (score, {"factors": factors, "alpha": alpha})
    log(f"  als best {best[1]} (recall+ndcg {best[0]:.4f})")
    chosen["als"] = best[1]

    best = (-1, None)
    for k in [20, 50, 100, 200]:
        m = evaluate(bl.item_knn(vtrain, items, all_cust, K, k=k)[pos], vcust, vtrain, vtest)
        score = m["recall@25"] + m["ndcg@25"]
        if score > best[0]:
            best = (score, {"k": k})
    log(f"  item_knn best {best[1]} (recall+ndcg {best[0]:.4f})")
    chosen["item_knn"] = best[1]
    return chosen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--cutoff", default=None)
    ap.add_argument("--test-weeks", type=int, default=4)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = read_online_retail(args.data)
    orders, products = data.orders, data.products
    log(f"read {len(orders)} order lines, {len(products)} products: {data.report}")
    cutoff = pd.Timestamp(args.cutoff) if args.cutoff else default_cutoff(orders, args.test_weeks)
    train, test, customers = split(orders, cutoff, args.test_weeks)
    log(f"cutoff {cutoff.date()}: {len(train)} train lines, {len(test)} test lines, {len(customers)} customers")

    chosen = tune(orders, products, cutoff, args.test_weeks)
    log(f"chosen on validation: {json.dumps(chosen)}")

    items = items_of(products, cutoff)
    all_cust = np.sort(train["customer_id"].unique())
    pos = pd.Index(all_cust).get_indexer(customers)
    methods, seconds = {}, {}

    def timed(name, fn):
        s = time.perf_counter()
        recs = fn()
        seconds[name] = round(time.perf_counter() - s, 2)
        methods[name] = evaluate(recs, customers, train, test)
        log(f"{name:24s} {methods[name]}  ({seconds[name]} s)")

    cfg = chosen["recommender"]
    params = recommender_params(**cfg, horizon_days=7.0 * args.test_weeks)
    timed("recommender", lambda: run_recommender(train, products, customers, cutoff, params))
    timed("popularity", lambda: bl.popularity(train, items, customers, K))
    timed("personal_top_frequency", lambda: bl.personal_top_frequency(train, items, customers, K))
    timed("als", lambda: bl.als(train, items, all_cust, K, **chosen["als"])[0][pos])
    timed("item_knn", lambda: bl.item_knn(train, items, all_cust, K, **chosen["item_knn"])[pos])
    tc = chosen["tifu_knn"]
    timed("tifu_knn", lambda: bl.tifu_knn(
        bl.tifu_vectors(train, items, all_cust, tc["group_size"], tc["within_decay"], tc["group_decay"]),
        items, K, tc["k"], tc["alpha"])[pos])

    best_base = max((m for m in methods if m != "recommender"), key=lambda m: methods[m]["recall@25"])
    result = {
        "data": args.data, "cutoff": str(cutoff.date()), "test_weeks": args.test_weeks,
        "customers": int(len(customers)), "seconds": round(time.perf_counter() - t0, 1),
        "method_seconds": seconds, "chosen": chosen, "best_baseline": best_base,
        "recommender_beats_all": all(methods["recommender"][k] > methods[m][k] for m in methods
                                     if m != "recommender" for k in ("recall@25", "ndcg@25")),
        "methods": methods,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

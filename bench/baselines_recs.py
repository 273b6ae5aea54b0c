"""Baselines for the recommendation evaluation (bench.recs_eval).

Each baseline takes the train orders (customer_id, product_id, order_id, order_date, ...), the
orderable product ids, the customers to score, and returns an (n_customers, n) array of product
ids, best first, padded with -1. Already-bought products are NOT filtered: on B2B order data
repeat purchases are most of what a customer buys next.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _index(train: pd.DataFrame, items: np.ndarray, customers: np.ndarray):
    t = train[train["product_id"].isin(items)]
    u = pd.Index(customers).get_indexer(t["customer_id"].to_numpy())
    i = np.searchsorted(items, t["product_id"].to_numpy())
    keep = u >= 0
    return t[keep], u[keep], i[keep]


def _top(scores: np.ndarray, n: int, items: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Top-n item ids per row of a dense score block (ties broken by ``tiebreak``, then id)."""
    s = scores.astype(np.float64)
    if tiebreak is not None:
        s = s + 1e-9 * tiebreak[None, :]
    n = min(n, s.shape[1])
    part = np.argpartition(-s, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return items[np.take_along_axis(part, order, axis=1)]


def popularity_scores(train: pd.DataFrame, items: np.ndarray) -> np.ndarray:
    """Distinct customers per item (scaled to [0, 1])."""
    t = train[train["product_id"].isin(items)].drop_duplicates(["customer_id", "product_id"])
    counts = np.bincount(np.searchsorted(items, t["product_id"].to_numpy()), minlength=len(items))
    return counts / max(counts.max(), 1)


def popularity(train, items, customers, n=25):
    pop = popularity_scores(train, items)
    top = _top(pop[None, :], n, items, None)[0]
    return np.tile(top, (len(customers), 1))


def personal_top_frequency(train, items, customers, n=25):
    """The customer's products by number of orders (ties: more recent first), then popularity."""
    t, u, i = _index(train, items, customers)
    per = pd.DataFrame({"u": u, "i": i, "o": t["order_id"].to_numpy(),
                        "d": t["order_date"].to_numpy()}).drop_duplicates(["u", "i", "o"])
    g = per.groupby(["u", "i"]).agg(n=("o", "size"), last=("d", "max")).reset_index()
    last = (g["last"] - g["last"].min()).dt.total_seconds().to_numpy()
    score = g["n"].to_numpy() + 0.5 * last / max(last.max(), 1.0)  # recency breaks count ties
    pop = popularity_scores(train, items)
    out = []
    for s in range(0, len(customers), 2000):
        e = min(s + 2000, len(customers))
        m = (g["u"].to_numpy() >= s) & (g["u"].to_numpy() < e)
        block = np.zeros((e - s, len(items)))
        block[g["u"].to_numpy()[m] - s, g["i"].to_numpy()[m]] = score[m] + 1.0
        out.append(_top(block + 1e-3 * pop[None, :], n, items))
    return np.vstack(out)


def _user_items(train, items, customers, log_counts=True):
    t, u, i = _index(train, items, customers)
    per = pd.DataFrame({"u": u, "i": i, "o": t["order_id"].to_numpy()}).drop_duplicates()
    m = sp.csr_matrix((np.ones(len(per)), (per["u"], per["i"])), shape=(len(customers), len(items)))
    if log_counts:
        m.data = np.log1p(m.data)
    return m


def als(train, items, customers, n=25, factors=64, regularization=0.05, alpha=10.0, iterations=15,
        seed=0):
    """implicit ALS on (log) order counts; recommends without filtering bought items."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from implicit.cpu.als import AlternatingLeastSquares

    ui = _user_items(train, items, customers)
    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                    iterations=iterations, random_state=seed, num_threads=2)
    model.fit(ui, show_progress=False)
    ids, _ = model.recommend(np.arange(len(customers)), ui, N=n, filter_already_liked_items=False)
    return np.where(ids >= 0, items[np.clip(ids, 0, len(items) - 1)], -1), model


def item_knn(train, items, customers, n=25, k=100):
    """implicit's cosine item-kNN on order counts; recommends without filtering bought items."""
    from implicit.nearest_neighbours import CosineRecommender

    ui = _user_items(train, items, customers)
    model = CosineRecommender(K=k, num_threads=2)
    model.fit(ui, show_progress=False)
    ids, _ = model.recommend(np.arange(len(customers)), ui, N=n, filter_already_liked_items=False)
    return np.where(ids >= 0, items[np.clip(ids, 0, len(items) - 1)], -1)


def tifu_vectors(train, items, customers, group_size=7, within_decay=0.9, group_decay=0.7):
    """TIFU-KNN personal item-frequency vectors (Hu et al., SIGIR 2020).

    A customer's baskets (orders) are split into groups of ``group_size`` consecutive baskets
    (counted from the most recent; the oldest group may be short). A group vector is the mean of
    its baskets weighted ``within_decay ** (baskets after it in the group)``; the customer vector
    is the mean of group vectors weighted ``group_decay ** (groups after it)``.
    """
    t, u, i = _index(train, items, customers)
    lines = pd.DataFrame({"u": u, "i": i, "o": t["order_id"].to_numpy(), "d": t["order_date"].to_numpy()})
    baskets = lines.groupby(["u", "o"], sort=False)["d"].min().reset_index().sort_values(["u", "d", "o"])
    n_b = baskets.groupby("u")["o"].transform("size").to_numpy()
    idx = baskets.groupby("u").cumcount().to_numpy()
    p = n_b - 1 - idx  # 0 = latest basket
    g, w = p // group_size, p % group_size
    n_groups = (n_b + group_size - 1) // group_size
    group_len = np.minimum(group_size, n_b - g * group_size)
    weight = within_decay ** w / group_len * group_decay ** g / n_groups
    baskets["weight"] = weight
    lines = lines.drop_duplicates(["u", "i", "o"]).merge(baskets[["u", "o", "weight"]], on=["u", "o"])
    return sp.csr_matrix((lines["weight"], (lines["u"], lines["i"])), shape=(len(customers), len(items)))


def tifu_knn(vectors: sp.csr_matrix, items, n=25, k=300, alpha=0.7, neighbours=None):
    """alpha * own vector + (1 - alpha) * mean of the k nearest (Euclidean) customers' vectors."""
    return tifu_knn_alphas(vectors, items, n, k, [alpha], neighbours)[0]


def tifu_knn_alphas(vectors, items, n, k, alphas, neighbours=None):
    """tifu_knn for several alphas sharing one neighbour average."""
    if neighbours is None:
        neighbours = tifu_neighbours(vectors, k)
    nb = neighbours[:, :k]
    out = [[] for _ in alphas]
    for s in range(0, vectors.shape[0], 1000):
        e = min(s + 1000, vectors.shape[0])
        rows = np.repeat(np.arange(e - s), nb.shape[1])
        agg = sp.csr_matrix((np.full(len(rows), 1.0 / nb.shape[1]), (rows, nb[s:e].ravel())),
                            shape=(e - s, vectors.shape[0]))
        own, mean = vectors[s:e].toarray(), (agg @ vectors).toarray()
        for j, alpha in enumerate(alphas):
            out[j].append(_top(alpha * own + (1 - alpha) * mean, n, items))
    return [np.vstack(o) for o in out]


def tifu_neighbours(vectors: sp.csr_matrix, k_max: int) -> np.ndarray:
    """Indices of each customer's k_max nearest other customers, nearest first (Euclidean)."""
    sq = np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel()
    n = vectors.shape[0]
    k_max = min(k_max, n - 1)
    out = np.empty((n, k_max), dtype=np.int64)
    vt = vectors.T.tocsc()
    for s in range(0, n, 1000):
        e = min(s + 1000, n)
        d = sq[s:e, None] + sq[None, :] - 2 * (vectors[s:e] @ vt).toarray()
        d[np.arange(e - s), np.arange(s, e)] = np.inf
        part = np.argpartition(d, k_max - 1, axis=1)[:, :k_max]
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        out[s:e] = np.take_along_axis(part, order, axis=1)
    return out

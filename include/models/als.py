"""Collaborative filtering: implicit-feedback ALS on an interaction matrix, with ranking metrics.

Hu, Koren & Volinsky (2008), "Collaborative Filtering for Implicit Feedback Datasets": the
matrix holds confidences c_ui (here log1p of weighted interaction counts, scaled by `alpha`
inside implicit), the factors fit the binary preference p_ui = [c_ui > 0]. Fitting is delegated
to `implicit` (its conjugate-gradient solver, eq. 4 of the paper solved per user and per item);
this module builds the matrix from frames, filters sparse users and items, splits a temporal
holdout and scores models on it. Pure: no I/O, no clock; seeded by `random_state`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

EVENT_TYPES = ("view", "add_to_cart", "purchase")
INTERACTION_COLUMNS = ("user_id", "product_id", "holdout", "n")


class ModelFitError(RuntimeError):
    """The fit produced unusable factors (NaN or infinite)."""


@dataclass
class Interactions:
    """The training matrix (users x items, CSR float32) with its id maps, and the holdout truth."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    holdout: pd.DataFrame  # user_id, product_id: what users bought in the holdout window
    dropped_users: int = 0
    dropped_items: int = 0


def build_interactions(orders: pd.DataFrame, events: pd.DataFrame | None, weights: dict[str, float],
                       min_interactions: int = 5, max_passes: int = 5) -> Interactions:
    """Confidence matrix from aggregated orders and events.

    Args:
        orders: user_id, product_id, holdout (0 train / 1 holdout window), n (orders of the pair).
        events: user_id, product_id, event_type, holdout, n (or None / empty).
        weights: per source "order", "view", "add_to_cart", "purchase": a pair's strength is the
            weighted sum of its counts; the matrix holds log1p(strength) (diminishing returns).
        min_interactions: users and items with fewer training interactions (the unweighted sum
            of counts) are dropped, repeatedly until stable (dropping items can push users under).

    Returns:
        Interactions; its holdout holds the pairs ordered (or purchase events) in the holdout window.
    """
    parts = [_frame(orders, "orders", ()).assign(w=float(weights.get("order", 1.0)), event_type="order")]
    if events is not None and len(events):
        ev = _frame(events, "events", ("event_type",))
        unknown = set(ev["event_type"].unique()) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types {sorted(unknown)}; expected {EVENT_TYPES}")
        ev["w"] = ev["event_type"].map({t: float(weights.get(t, 0.0)) for t in EVENT_TYPES}).astype(float)
        parts.append(ev)
    data = pd.concat([p[["user_id", "product_id", "holdout", "n", "w", "event_type"]] for p in parts],
                     ignore_index=True)
    is_holdout = data["holdout"].to_numpy() == 1
    truth_rows = data[is_holdout & data["event_type"].isin(["order", "purchase"]).to_numpy()]
    holdout = truth_rows[["user_id", "product_id"]].drop_duplicates().reset_index(drop=True)

    train = data[~is_holdout]
    train = train.assign(strength=train["n"] * train["w"]).groupby(["user_id", "product_id"], sort=False).agg(
        strength=("strength", "sum"), n=("n", "sum")).reset_index()
    users0, items0 = train["user_id"].nunique(), train["product_id"].nunique()
    for _ in range(max_passes):
        u = train.groupby("user_id")["n"].transform("sum")
        i = train.groupby("product_id")["n"].transform("sum")
        keep = (u >= min_interactions) & (i >= min_interactions)
        if keep.all():
            break
        train = train[keep]
    train = train[train["strength"] > 0]
    # pandas' hash factorize: numpy 2.4's np.unique(return_inverse=True) is ~4x slower on 20M ids
    user_index, user_ids = pd.factorize(train["user_id"].to_numpy(np.int64), sort=True)
    item_index, item_ids = pd.factorize(train["product_id"].to_numpy(np.int64), sort=True)
    matrix = sp.csr_matrix((np.log1p(train["strength"].to_numpy(np.float32)), (user_index, item_index)),
                           shape=(len(user_ids), len(item_ids)), dtype=np.float32)
    return Interactions(matrix, user_ids, item_ids, holdout, users0 - len(user_ids), items0 - len(item_ids))


def _frame(frame: pd.DataFrame, name: str, extra: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in (*INTERACTION_COLUMNS, *extra) if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; expected {list(INTERACTION_COLUMNS) + list(extra)}")
    out = frame.astype({"user_id": "int64", "product_id": "int64", "holdout": "int8", "n": "float64"})
    if (out["n"] < 0).any():
        raise ValueError(f"{name}: negative interaction counts; counts must be >= 0")
    return out


class ALSModel:
    """Implicit ALS (CPU, conjugate gradient) with float32 factors and a no-pickle state."""

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 15,
                 alpha: float = 10.0, random_state: int = 0, num_threads: int = 0) -> None:
        # model size and prior
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        # solver
        self.iterations = iterations
        self.num_threads = num_threads
        self.random_state = random_state

    def params(self) -> dict:
        return {"factors": self.factors, "regularization": self.regularization, "iterations": self.iterations,
                "alpha": self.alpha, "random_state": self.random_state}

    def fit(self, user_items: sp.csr_matrix) -> "ALSModel":
        """Fit on a users x items confidence matrix (CSR). Returns self."""
        if not sp.issparse(user_items) or user_items.ndim != 2:
            raise ValueError(f"user_items must be a 2-d scipy sparse matrix (users x items), got {type(user_items)}")
        if min(user_items.shape) == 0 or user_items.nnz == 0:
            raise ValueError(f"user_items is empty ({user_items.shape}, {user_items.nnz} entries): nothing to fit; "
                             "lower min_interactions or widen the data window")
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                        iterations=self.iterations, num_threads=self.num_threads,
                                        random_state=self.random_state, dtype=np.float32)
        model.fit(sp.csr_matrix(user_items, dtype=np.float32), show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        if not (np.isfinite(self.user_factors_).all() and np.isfinite(self.item_factors_).all()):
            raise ModelFitError("ALS produced NaN or infinite factors; raise regularization or lower alpha")
        return self


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest scores per row, best first (ties by lower index)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def ranking_metrics(recommended: np.ndarray, truth: list[set], k: int) -> dict[str, float]:
    """Mean NDCG@k, recall@k and precision@k over users (binary relevance).

    Args:
        recommended: users x >=k item ids, best first (-1 = no recommendation).
        truth: per user the set of relevant item ids (non-empty).
        k: cut-off. recall@k divides by min(k, |truth|) so a perfect list scores 1.
    """
    if len(recommended) != len(truth):
        raise ValueError(f"recommended has {len(recommended)} rows but truth {len(truth)}; one per user")
    if not len(truth):
        return {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, f"precision@{k}": 0.0, "users": 0}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg = recall = precision = 0.0
    for row, relevant in zip(recommended[:, :k], truth):
        hits = np.fromiter((item in relevant for item in row.tolist()), bool, len(row))
        ideal = discounts[:min(k, len(relevant))].sum()
        ndcg += float(discounts[:len(row)][hits].sum() / ideal)
        recall += hits.sum() / min(k, len(relevant))
        precision += hits.sum() / k
    n = len(truth)
    return {f"ndcg@{k}": round(float(ndcg) / n, 6), f"recall@{k}": round(float(recall) / n, 6),
            f"precision@{k}": round(float(precision) / n, 6), "users": n}


def recommend_ids(user_factors: np.ndarray, item_factors: np.ndarray, item_ids: np.ndarray, rows: np.ndarray,
                  k: int, seen: list[np.ndarray] | None = None, batch_size: int = 2048,
                  max_seen: int = 1000) -> np.ndarray:
    """Top-k item ids for the users at `rows` of user_factors (-1 rows = unknown user: all -1);
    `seen` (per user, item ids) are never recommended.

    An exact FAISS inner-product search (blocked GEMM with a fused top-k heap, much faster than a
    full argpartition of every score row) for k + the batch's most seen items, then the seen ones
    dropped; a user with more than `max_seen` seen items may get fewer than k."""
    import faiss

    k = min(k, len(item_ids))
    out = np.full((len(rows), k), -1, dtype=np.int64)
    known = np.flatnonzero(rows >= 0)
    index = faiss.IndexFlatIP(item_factors.shape[1])
    index.add(np.ascontiguousarray(item_factors, dtype=np.float32))
    for begin in range(0, len(known), batch_size):
        sel = known[begin:begin + batch_size]
        extra = min(max_seen, max((len(seen[u]) for u in sel), default=0)) if seen is not None else 0
        depth = min(len(item_ids), k + extra)
        _, found = index.search(np.ascontiguousarray(user_factors[rows[sel]], dtype=np.float32), depth)
        ids = np.where(found >= 0, item_ids[np.maximum(found, 0)], -1)
        if seen is None:
            out[sel] = ids[:, :k]
            continue
        for j, user in enumerate(sel):
            keep = ids[j][(ids[j] >= 0) & ~np.isin(ids[j], seen[user])][:k]
            out[user, :len(keep)] = keep
    return out


def evaluate(user_factors: np.ndarray, item_factors: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray,
             eval_users: np.ndarray, truth: list[set], k: int, seen: list[np.ndarray] | None = None) -> dict[str, float]:
    """Ranking metrics of a model (its factors and id maps) for `eval_users` against `truth`, never
    recommending `seen` items. Users the model does not know count as zero (it cannot serve them)."""
    rows = _positions(user_ids, eval_users)
    metrics = ranking_metrics(recommend_ids(user_factors, item_factors, item_ids, rows, k, seen), truth, k)
    metrics["unknown_users"] = int((rows < 0).sum())
    return metrics


def holdout_truth(data: Interactions, max_users: int, random_state: int = 0,
                  exclude_seen: bool = True) -> tuple[np.ndarray, list[set], list[np.ndarray] | None]:
    """Evaluation users, their relevant items and (exclude_seen) their training items.

    Users are those of the matrix with holdout purchases (a seeded sample of at most `max_users`).
    With exclude_seen the task is discovery: items a user had in training are neither relevant
    nor recommendable, and users with only repeat purchases drop out.
    """
    holdout = data.holdout
    known = holdout[np.isin(holdout["user_id"].to_numpy(np.int64), data.user_ids)]
    rows = _positions(data.user_ids, known["user_id"].to_numpy(np.int64))
    if exclude_seen and len(known):
        cols = _positions(data.item_ids, known["product_id"].to_numpy(np.int64))
        in_train = np.zeros(len(known), bool)
        has = cols >= 0
        in_train[has] = np.asarray(data.matrix[rows[has], cols[has]]).ravel() > 0
        known = known[~in_train]
    users = np.unique(known["user_id"].to_numpy(np.int64))
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(random_state).choice(users, max_users, replace=False))
    known = known[np.isin(known["user_id"].to_numpy(np.int64), users)]
    groups = known.groupby("user_id")["product_id"].agg(lambda s: set(s.astype("int64").tolist()))
    truth = [groups[u] for u in users]
    if not exclude_seen:
        return users, truth, None
    m = data.matrix
    seen = [data.item_ids[m.indices[m.indptr[r]:m.indptr[r + 1]]] for r in _positions(data.user_ids, users)]
    return users, truth, seen


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted id in sorted `ids`, -1 when absent."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], wanted)
    pos = np.clip(pos, 0, max(len(ids) - 1, 0))
    found = (len(ids) > 0) & (ids[order][pos] == wanted) if len(ids) else np.zeros(len(wanted), bool)
    return np.where(found, order[pos], -1)


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): inner product = cosine similarity."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)

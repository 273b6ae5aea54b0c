"""ALS wrapper, interaction matrix and ranking metrics on planted-structure data (no services)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.models import als
from include.models.vector_index import similar_rows

GROUPS, USERS_PER_GROUP, ITEMS_PER_GROUP = 6, 40, 25


def planted(seed: int = 0, noise: float = 0.03) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users in GROUPS communities buy mostly their community's items; a holdout of fresh purchases.
    User u belongs to group u // USERS_PER_GROUP (ids from 1000), item i to i // ITEMS_PER_GROUP (ids from 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(GROUPS * USERS_PER_GROUP):
        g = u // USERS_PER_GROUP
        own = g * ITEMS_PER_GROUP + rng.choice(ITEMS_PER_GROUP, 12, replace=False)
        for holdout, items in ((0, own[:9]), (1, own[9:])):
            for i in items:
                rows.append((1000 + u, 1 + int(i), holdout, int(rng.integers(1, 4))))
        for i in rng.choice(GROUPS * ITEMS_PER_GROUP, int(noise * 100), replace=False):
            rows.append((1000 + u, 1 + int(i), 0, 1))
    orders = pd.DataFrame(rows, columns=["user_id", "product_id", "holdout", "n"])
    orders = orders.groupby(["user_id", "product_id", "holdout"], as_index=False)["n"].sum()
    events = orders[orders["holdout"] == 0].assign(event_type="view", n=2)
    return orders, events


WEIGHTS = {"order": 3.0, "purchase": 1.0, "add_to_cart": 0.5, "view": 0.1}


def _fit(orders, events, **kw):
    data = als.build_interactions(orders, events, WEIGHTS, min_interactions=5)
    model = als.ALSModel(factors=16, regularization=5.0, iterations=15, alpha=2.0, random_state=1, **kw).fit(data.matrix)
    return data, model


def test_recovers_planted_neighbours():
    orders, events = planted()
    data, model = _fit(orders, events)
    group = (data.user_ids - 1000) // USERS_PER_GROUP
    rows, scores = similar_rows(model.user_factors_, 20)
    same = (group[rows] == group[:, None]).mean()
    assert same > 0.95, same
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    assert not (rows == np.arange(len(rows))[:, None]).any()  # never yourself

    item_group = (data.item_ids - 1) // ITEMS_PER_GROUP
    item_rows, _ = similar_rows(model.item_factors_, 10)
    assert (item_group[item_rows] == item_group[:, None]).mean() > 0.95


def test_holdout_metrics_beat_a_random_model():
    orders, events = planted()
    data, model = _fit(orders, events)
    users, truth, seen = als.holdout_truth(data, 10_000)
    good = als.evaluate(model.user_factors_, model.item_factors_, data.user_ids, data.item_ids, users, truth, 10, seen)
    rng = np.random.default_rng(0)
    random = als.evaluate(rng.normal(size=model.user_factors_.shape).astype(np.float32),
                          rng.normal(size=model.item_factors_.shape).astype(np.float32),
                          data.user_ids, data.item_ids, users, truth, 10, seen)
    assert good["users"] == GROUPS * USERS_PER_GROUP
    assert good["ndcg@10"] > 3 * random["ndcg@10"]
    assert good["recall@10"] > 0.5
    assert all(not (set(s.tolist()) & t) for s, t in zip(seen, truth))  # discovery: nothing seen is relevant


def test_seeded_fit_is_deterministic():
    orders, events = planted()
    _, a = _fit(orders, events, num_threads=1)
    _, b = _fit(orders, events, num_threads=1)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)


def test_sparse_users_and_items_are_dropped_repeatedly():
    orders = pd.DataFrame({"user_id": [1] * 5 + [2] * 5 + [3], "product_id": [10, 11, 12, 13, 14] * 2 + [10],
                           "holdout": 0, "n": [1] * 10 + [1]})
    data = als.build_interactions(orders, None, WEIGHTS, min_interactions=2)
    assert data.user_ids.tolist() == [1, 2] and data.item_ids.tolist() == [10, 11, 12, 13, 14]
    assert data.dropped_users == 1
    assert data.matrix.shape == (2, 5) and data.matrix.nnz == 10
    assert data.matrix[0, 0] == pytest.approx(np.log1p(3.0))  # one order x weight 3


def test_bad_inputs_say_what_is_expected():
    with pytest.raises(ValueError, match="lacks columns"):
        als.build_interactions(pd.DataFrame({"user_id": [1]}), None, WEIGHTS)
    ev = pd.DataFrame({"user_id": [1], "product_id": [1], "holdout": [0], "n": [1], "event_type": ["click"]})
    with pytest.raises(ValueError, match="unknown event types"):
        als.build_interactions(ev.drop(columns="event_type"), ev, WEIGHTS)
    import scipy.sparse as sp

    with pytest.raises(ValueError, match="empty"):
        als.ALSModel().fit(sp.csr_matrix((3, 3), dtype=np.float32))


def test_ranking_metrics_on_a_known_list():
    recommended = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    truth = [{1, 3}, {5}]
    m = als.ranking_metrics(recommended, truth, 4)
    dcg = 1 + 1 / np.log2(4)
    idcg = 1 + 1 / np.log2(3)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg / 2, abs=1e-6)
    assert m["recall@4"] == pytest.approx(0.5)
    assert m["precision@4"] == pytest.approx(2 / 4 / 2)


def test_top_k_orders_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.9]])
    assert als.top_k(scores, 3).tolist() == [[1, 3, 2]]

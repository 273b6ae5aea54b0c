"""Unit tests of include.models.recommender.HybridRecommender on histories with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.models.recommender import FIT_ORDER_COLUMNS, ORDER_COLUMNS, OUTPUT_COLUMNS, HybridRecommender

AS_OF = pd.Timestamp("2024-06-01")


def catalogue(n=60, created=pd.Timestamp("2023-01-01")):
    ids = np.arange(1, n + 1, dtype=np.int64)
    return pd.DataFrame({
        "product_id": ids,
        "name": [f"product {i}" for i in ids],
        "category": [f"cat{i % 4}" for i in ids],
        "brand": "unknown",
        "price": 1.0 + (ids % 7),
        "description": "",
        "created_at": created,
    })


def lines(rows):
    """rows: (customer, product, order, days before AS_OF, quantity)."""
    df = pd.DataFrame(rows, columns=["customer_id", "product_id", "order_id", "days", "quantity"])
    df["order_date"] = AS_OF - pd.to_timedelta(df.pop("days"), unit="D")
    df["price"] = 2.0
    df["quantity"] = df["quantity"].astype(float)
    return df.astype({"customer_id": "int64", "product_id": "int64", "order_id": "int64"})


def background(n_customers=40, n_products=60, seed=0):
    """Random customers 100.. buying random products, a few orders each."""
    rng = np.random.default_rng(seed)
    rows, order = [], 10_000
    for c in range(100, 100 + n_customers):
        for _ in range(rng.integers(1, 5)):
            order += 1
            day = int(rng.integers(1, 200))
            for p in rng.choice(np.arange(20, n_products + 1), size=rng.integers(1, 6), replace=False):
                rows.append((c, int(p), order, day, 1))
    return rows


def weekly_buyer():
    # customer 1 buys product 5 every 7 days for 10 weeks, last 7 days ago, 12 units each time;
    # and products 6 and 7 once, long ago.
    rows = [(1, 5, 100 + k, 7 + 7 * k, 12) for k in range(10)]
    rows += [(1, 6, 200, 150, 1), (1, 7, 201, 160, 1)]
    return rows


def fitted(rows, products=None, **params):
    orders = lines(rows)
    products = catalogue() if products is None else products
    model = HybridRecommender(top_n=params.pop("top_n", 10), **params).fit(orders, products, AS_OF)
    return model, orders


def check_contract(rec, customers, top_n, n_catalogue):
    assert list(rec.columns) == OUTPUT_COLUMNS
    assert set(rec["customer_id"]) == set(customers)
    expected = min(top_n, n_catalogue)
    for _, g in rec.groupby("customer_id"):
        assert len(g) == expected
        assert g["product_id"].is_unique
        assert g["rank"].tolist() == list(range(1, expected + 1))
        assert (np.diff(g["score"].to_numpy()) <= 1e-12).all(), "scores must not increase with rank"
    assert rec["score"].between(0.0, 1.0).all()
    assert set(rec["source"]) <= {"repeat", "collaborative", "similar", "discovery", "hybrid"}


def test_weekly_repeat_purchase_ranks_first_as_repeat():
    model, orders = fitted(weekly_buyer() + background())
    rec = model.recommend(orders[orders["customer_id"] == 1], np.array([1]), AS_OF)
    top = rec.iloc[0]
    assert top["product_id"] == 5
    assert top["source"] == "repeat"
    assert top["purchase_frequency_days"] == pytest.approx(7.0)
    assert top["predicted_quantity"] == pytest.approx(12.0)
    assert top["last_purchased"] == AS_OF - pd.Timedelta(days=7)
    assert top["segment"] == "loyal"


def test_product_bought_once_by_one_customer_is_never_repeat_for_others():
    rows = background() + [(2, 3, 999, 10, 1)]  # only customer 2 ever bought product 3, once
    model, orders = fitted(rows, top_n=60)
    customers = np.array(sorted(orders["customer_id"].unique()))
    rec = model.recommend(orders, customers, AS_OF)
    others = rec[(rec["product_id"] == 3) & (rec["customer_id"] != 2)]
    assert len(others) > 0  # full catalogue, so everybody gets product 3 somewhere
    assert (others["source"] != "repeat").all()
    assert others["last_purchased"].isna().all()
    # and in general 'repeat' only ever names a product from the customer's own history
    owned = set(zip(orders["customer_id"], orders["product_id"]))
    repeat = rec[rec["source"] == "repeat"]
    assert all((c, p) in owned for c, p in zip(repeat["customer_id"], repeat["product_id"]))


def test_exactly_top_n_distinct_products_with_ranks_and_scores():
    model, orders = fitted(weekly_buyer() + background(), top_n=25)
    customers = np.array([1, 100, 101, 102, 5555])  # 5555 has no history
    rec = model.recommend(orders[orders["customer_id"].isin(customers)], customers, AS_OF)
    check_contract(rec, customers, 25, 60)
    assert rec["customer_id"].drop_duplicates().tolist() == customers.tolist()
    assert rec["product_id"].isin(catalogue()["product_id"]).all()


def test_catalogue_smaller_than_top_n_gives_all_products():
    products = catalogue(8)
    rows = [(1, 1 + k % 8, 10 + k, 5 + 3 * k, 1) for k in range(12)]
    model, orders = fitted(rows, products=products, top_n=25)
    rec = model.recommend(orders, np.array([1, 2]), AS_OF)
    check_contract(rec, [1, 2], 25, 8)
    for _, g in rec.groupby("customer_id"):
        assert sorted(g["product_id"]) == list(range(1, 9))


def test_orderable_means_in_catalogue_and_created_by_as_of():
    products = catalogue(30)
    products.loc[products["product_id"] == 30, "created_at"] = AS_OF + pd.Timedelta(days=3)
    rows = background(n_products=30) + [(1, 999, 1, 3, 1)]  # 999 is not in the catalogue
    model, orders = fitted(rows, products=products, top_n=40)
    rec = model.recommend(orders, np.array([1, 100]), AS_OF)
    assert set(rec["product_id"]) == set(range(1, 30))


def test_new_customer_gets_discovery_recommendations():
    model, orders = fitted(weekly_buyer() + background(), top_n=10)
    rec = model.recommend(orders.iloc[:0], np.array([424242]), AS_OF)
    check_contract(rec, [424242], 10, 60)
    assert (rec["source"] == "discovery").all()
    assert (rec["segment"] == "new").all()
    assert rec["last_purchased"].isna().all() and rec["predicted_quantity"].isna().all()
    # the most popular product of the background is among them
    popular = orders.drop_duplicates(["customer_id", "product_id"])["product_id"].value_counts().index[0]
    assert popular in set(rec["product_id"])


def test_co_purchase_recommends_partner_as_collaborative():
    # 30 customers buy A=40 and B=41 together; customer 1 buys only A, in 4 orders.
    rows = [(500 + k, a, 5000 + k, 20 + k, 1) for k in range(30) for a in (40, 41)]
    rows += [(1, 40, 100 + k, 10 + 15 * k, 1) for k in range(4)]
    rows += background()
    model, orders = fitted(rows, top_n=10)
    rec = model.recommend(orders[orders["customer_id"] == 1], np.array([1]), AS_OF)
    assert rec["product_id"].tolist()[:2] == [40, 41]
    b = rec[rec["product_id"] == 41].iloc[0]
    assert b["source"] == "collaborative"
    assert pd.isna(b["last_purchased"])


def test_segments_follow_thresholds():
    rows = weekly_buyer() + [(2, 8, 300, 200, 1), (2, 9, 301, 190, 1), (3, 10, 302, 5, 1)]
    model, orders = fitted(rows + background())
    rec = model.recommend(orders, np.array([1, 2, 3, 4]), AS_OF)
    seg = rec.drop_duplicates("customer_id").set_index("customer_id")["segment"]
    assert seg.to_dict() == {1: "loyal", 2: "dormant", 3: "new", 4: "new"}


def test_save_load_round_trip_gives_identical_recommendations(tmp_path):
    model, orders = fitted(weekly_buyer() + background(), top_n=15)
    factors = np.random.default_rng(1).normal(size=(60, 8)).astype(np.float32)
    model.fit(orders, catalogue(), AS_OF, item_factors=factors, factor_item_ids=np.arange(1, 61))
    customers = np.array([1, 100, 101, 77777])
    before = model.recommend(orders, customers, AS_OF)
    model.save(tmp_path / "model")
    assert not list((tmp_path / "model").glob("*.pkl"))
    loaded = HybridRecommender.load(tmp_path / "model")
    after = loaded.recommend(orders, customers, AS_OF)
    pd.testing.assert_frame_equal(before, after)
    assert loaded.top_n == 15 and loaded.segment_weights == model.segment_weights


def test_recommend_is_independent_of_shard_composition_and_batching():
    model, orders = fitted(weekly_buyer() + background(), top_n=10)
    customers = np.array(sorted(orders["customer_id"].unique()))
    whole = model.recommend(orders, customers, AS_OF)
    model.batch_size = 3
    batched = model.recommend(orders, customers[::-1], AS_OF)
    one = model.recommend(orders[orders["customer_id"] == 1], np.array([1]), AS_OF)
    key = ["customer_id", "rank"]
    pd.testing.assert_frame_equal(whole.sort_values(key).reset_index(drop=True),
                                  batched.sort_values(key).reset_index(drop=True))
    pd.testing.assert_frame_equal(one.reset_index(drop=True),
                                  whole[whole["customer_id"] == 1].reset_index(drop=True))


@pytest.mark.parametrize("drop", ORDER_COLUMNS)
def test_missing_order_columns_raise_clear_error(drop):
    orders = lines(background())
    model = HybridRecommender().fit(orders, catalogue(), AS_OF)
    if drop in FIT_ORDER_COLUMNS:
        with pytest.raises(ValueError, match=f"orders is missing columns \\['{drop}'\\]"):
            HybridRecommender().fit(orders.drop(columns=drop), catalogue(), AS_OF)
    else:  # fit learns nothing from quantities: the same model without them
        without = HybridRecommender().fit(orders.drop(columns=drop), catalogue(), AS_OF)
        customers = orders["customer_id"].unique()
        pd.testing.assert_frame_equal(without.recommend(orders, customers, AS_OF),
                                      model.recommend(orders, customers, AS_OF))
    with pytest.raises(ValueError, match=f"missing columns \\['{drop}'\\]"):
        model.recommend(orders.drop(columns=drop), np.array([100]), AS_OF)


def test_bad_inputs_raise_value_errors():
    orders = lines(background())
    with pytest.raises(ValueError, match="products is missing columns \\['category'\\]"):
        HybridRecommender().fit(orders, catalogue().drop(columns="category"), AS_OF)
    with pytest.raises(ValueError, match="item_factors and factor_item_ids"):
        HybridRecommender().fit(orders, catalogue(), AS_OF, item_factors=np.zeros((60, 4)))
    model = HybridRecommender().fit(orders, catalogue(), AS_OF)
    with pytest.raises(ValueError, match="1-d"):
        model.recommend(orders, np.array([[100]]), AS_OF)
    with pytest.raises(ValueError, match="unique"):
        model.recommend(orders, np.array([100, 100]), AS_OF)
    with pytest.raises(ValueError, match="not fitted"):
        HybridRecommender().recommend(orders, np.array([100]), AS_OF)
    with pytest.raises(ValueError, match="top_n"):
        HybridRecommender(top_n=0)

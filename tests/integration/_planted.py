"""Planted-structure order data for cf_training and faiss_rebuild: communities of customers buying
their community's products, and product texts that name the community."""
from __future__ import annotations

import numpy as np
import pandas as pd

GROUPS, USERS_PER_GROUP, ITEMS_PER_GROUP = 6, 40, 25
WORDS = ["garden", "kitchen", "baby", "dog", "laptop", "bicycle"]
TRAIN_START, HOLDOUT_START, END = "2024-01-08", "2024-05-21", "2024-06-02"  # holdout: the last 14 days to 06-02


def user_group(user_id):
    return (np.asarray(user_id) - 1) // USERS_PER_GROUP


def item_group(product_id):
    return (np.asarray(product_id) - 1) // ITEMS_PER_GROUP


def planted(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(orders, products): customer u buys 9 of its group's products before HOLDOUT_START (1-3 orders
    each) and 3 new ones after, plus one random product; one order line per order."""
    rng = np.random.default_rng(seed)
    t0, t1, t2 = (np.datetime64(d) for d in (TRAIN_START, HOLDOUT_START, END))
    rows = []
    for u in range(GROUPS * USERS_PER_GROUP):
        g = u // USERS_PER_GROUP
        own = g * ITEMS_PER_GROUP + rng.choice(ITEMS_PER_GROUP, 12, replace=False)
        noise = rng.integers(0, GROUPS * ITEMS_PER_GROUP)
        for i in [*own[:9], noise]:
            for _ in range(int(rng.integers(1, 4))):
                rows.append((u + 1, int(i) + 1, t0 + rng.integers(0, int((t1 - t0).astype(int))) * np.timedelta64(1, "D")))
        for i in own[9:]:
            rows.append((u + 1, int(i) + 1, t1 + rng.integers(0, int((t2 - t1).astype(int))) * np.timedelta64(1, "D")))
    orders = pd.DataFrame(rows, columns=["customer_id", "product_id", "order_date"])
    orders["order_date"] = pd.to_datetime(orders["order_date"]) + pd.Timedelta(hours=10)
    orders = orders.sort_values(["order_date", "customer_id"], kind="stable").reset_index(drop=True)
    orders["order_id"] = np.arange(1, len(orders) + 1)
    orders["quantity"], orders["price"] = 1.0, 9.99
    n = GROUPS * ITEMS_PER_GROUP
    ids = np.arange(1, n + 1)
    word = np.array(WORDS)[item_group(ids)]
    products = pd.DataFrame({"product_id": ids, "name": [f"{w} thing {i}" for w, i in zip(word, ids)],
                             "category": word, "brand": [f"brand{i % 7}" for i in ids],
                             "description": [f"a useful {w} product" for w in word], "price": 9.99,
                             "created_at": pd.Timestamp("2023-01-01")})
    return orders, products

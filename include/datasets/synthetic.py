"""Synthetic order data with the structure of real order histories, deterministic by seed.

What it plants, so that models have something true to find:
- Zipf product popularity inside categories, brands and log-normal price levels per category;
- per customer a few staple products bought on their own repeat cycle (days, with jitter) and
  a base quantity, plus exploratory lines drawn by popularity from the customer's categories;
- yearly seasonality (a peak in late November) by thinning, intermittent demand in the tail;
- new products that sell only after their creation date;
- customers who start late (new), stop early (dormant or churned), and account flags
  (inactive, blocked, deleted) in the proportions of a real client table;
- an event stream: a purchase event per order line, carts and views around them.
Everything is vectorised with numpy: no loop runs per customer, product or order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

_DAY = np.timedelta64(1, "D")
_SEASON_AMPLITUDE = 0.35
_SEASON_PEAK_DAY = 320  # day of year of the demand peak (mid November)


@dataclass
class Synthetic:
    orders: pd.DataFrame
    products: pd.DataFrame
    customers: pd.DataFrame
    events: pd.DataFrame


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _season(days: np.ndarray) -> np.ndarray:
    """Seasonal demand multiplier in [1 - A, 1 + A] for datetime64[D] days."""
    doy = (days - days.astype("datetime64[Y]")).astype(np.int64)
    return 1.0 + _SEASON_AMPLITUDE * np.cos(2 * np.pi * (doy - _SEASON_PEAK_DAY) / 365.25)


def generate(customers: int = 2_000, products: int = 500, start: str = "2023-01-02",
             end: str = "2024-12-30", categories: int = 20, brands: int = 60,
             staples_mean: float = 3.0, cycle_median_days: float = 28.0,
             explore_per_order: float = 1.0, views_per_purchase: float = 2.0,
             carts_per_purchase: float = 0.5, seed: int = 0) -> Synthetic:
    """Orders, products, customers and events between `start` and `end` (dates, end exclusive)."""
    if customers < 1 or products < 1:
        raise ValueError(f"need at least one customer and one product, got {customers} and {products}")
    rng = np.random.default_rng(seed)
    t0, t1 = np.datetime64(start, "D"), np.datetime64(end, "D")
    span = int((t1 - t0) / _DAY)
    if span < 28:
        raise ValueError(f"need at least 28 days between start and end, got {span}")

    # products: category, popularity rank inside the catalogue, brand, price, creation date
    product_id = np.arange(1, products + 1, dtype=np.int64)
    popularity = _zipf_weights(products, 1.05)[rng.permutation(products)]
    category = rng.choice(categories, size=products, p=_zipf_weights(categories, 0.6))
    brand = rng.integers(0, brands, size=products)
    price = np.round(np.exp(rng.normal(2.0 + 0.08 * category, 0.5)), 2)
    is_new = rng.random(products) < 0.1
    created = np.where(is_new, t0 + rng.integers(0, span, products) * _DAY,
                       t0 - rng.integers(30, 900, products) * _DAY)
    product_frame = pd.DataFrame({
        "product_id": product_id,
        "name": [f"Product {i}" for i in product_id],
        "category": np.char.add("category-", category.astype(str)),
        "brand": np.char.add("brand-", brand.astype(str)),
        "price": price,
        "description": [f"Product {i} of category {c} by brand {b}" for i, c, b in zip(product_id, category, brand)],
        "created_at": created.astype("datetime64[us]"),
    })

    # customers: lifetime window (new ones start late, churned ones stop early) and account flags
    customer_id = np.arange(1, customers + 1, dtype=np.int64)
    kind = rng.choice(4, size=customers, p=[0.6, 0.15, 0.15, 0.1])  # steady, new, dormant, churned
    first = np.where(kind == 1, rng.integers(span // 2, span, customers), rng.integers(0, max(1, span // 4), customers))
    last = np.where(kind == 2, span - rng.integers(60, 180, customers),
                    np.where(kind == 3, rng.integers(span // 4, span // 2, customers), span))
    last = np.maximum(last, first + 1)
    customer_frame = pd.DataFrame({
        "customer_id": customer_id,
        "is_active": (rng.random(customers) > 0.03).astype(np.int16),
        "is_blocked": (rng.random(customers) < 0.01).astype(np.int16),
        "deleted": (rng.random(customers) < 0.01).astype(np.int16),
        "created_at": (t0 + first * _DAY - 7 * _DAY).astype("datetime64[us]"),
        "gender": rng.choice(np.array(["f", "m", "x"]), size=customers, p=[0.48, 0.48, 0.04]),
        "age_group": rng.choice(np.array(["18-24", "25-34", "35-44", "45-54", "55+"]), size=customers),
        "geo_id": rng.integers(1, 21, size=customers).astype(np.int32),
    })

    # staples: each customer repeats a few products from a favoured category on its own cycle
    n_staples = 1 + rng.poisson(staples_mean - 1, customers)
    owner = np.repeat(np.arange(customers), n_staples)
    favourite = rng.choice(categories, size=customers, p=_zipf_weights(categories, 0.6))
    in_favourite = rng.random(len(owner)) < 0.7
    by_category = [np.flatnonzero(category == c) for c in range(categories)]
    staple = rng.choice(products, size=len(owner), p=popularity)
    for c in range(categories):  # a loop over categories, not entities
        members = by_category[c]
        pick = in_favourite & (favourite[owner] == c)
        if members.size and pick.any():
            weights = popularity[members] / popularity[members].sum()
            staple[pick] = rng.choice(members, size=int(pick.sum()), p=weights)
    cycle = np.clip(np.exp(rng.normal(np.log(cycle_median_days), 0.5, len(owner))), 3, 180)
    phase = rng.random(len(owner)) * cycle
    base_qty = np.clip(np.round(np.exp(rng.normal(1.0, 0.8, len(owner)))), 1, 200)
    begin = np.maximum(first[owner], ((created[staple] - t0) / _DAY).astype(np.int64).clip(0))
    repeats = np.maximum(((last[owner] - begin - phase) // cycle).astype(np.int64) + 1, 0)
    line_of = np.repeat(np.arange(len(owner)), repeats)
    j = np.arange(len(line_of)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    day = begin[line_of] + phase[line_of] + j * cycle[line_of] + rng.normal(0, 0.15, len(line_of)) * cycle[line_of]
    day = np.clip(np.round(day), begin[line_of], span - 1).astype(np.int64)
    keep = rng.random(len(day)) < _season(t0 + day * _DAY) / (1 + _SEASON_AMPLITUDE)
    line_of, day = line_of[keep], day[keep]
    lines = pd.DataFrame({"c": owner[line_of], "p": staple[line_of], "day": day,
                          "quantity": rng.poisson(base_qty[line_of]).clip(1).astype(np.float64)})

    # orders: one order per customer-day of staple purchases, plus exploratory lines
    lines = lines.drop_duplicates(["c", "p", "day"])
    orders_key = lines[["c", "day"]].drop_duplicates().sort_values(["day", "c"], ignore_index=True)
    orders_key["order_id"] = np.arange(1, len(orders_key) + 1, dtype=np.int64)
    n_explore = rng.poisson(explore_per_order, len(orders_key))
    explore_order = np.repeat(np.arange(len(orders_key)), n_explore)
    explore_product = rng.choice(products, size=len(explore_order), p=popularity)
    sold = (created[explore_product] - t0) / _DAY <= orders_key["day"].to_numpy()[explore_order]
    explore = pd.DataFrame({"c": orders_key["c"].to_numpy()[explore_order[sold]],
                            "p": explore_product[sold],
                            "day": orders_key["day"].to_numpy()[explore_order[sold]],
                            "quantity": (1 + rng.poisson(1.0, int(sold.sum()))).astype(np.float64)})
    lines = pd.concat([lines, explore], ignore_index=True).drop_duplicates(["c", "p", "day"])
    lines = lines.merge(orders_key, on=["c", "day"])
    seconds = rng.integers(8 * 3600, 20 * 3600, len(orders_key))
    order_time = (t0 + orders_key["day"].to_numpy() * _DAY).astype("datetime64[s]") + seconds.astype("timedelta64[s]")
    order_time = pd.Series(order_time, index=orders_key["order_id"].to_numpy())
    lines = lines.sort_values(["order_id", "p"], ignore_index=True)
    order_frame = pd.DataFrame({
        "customer_id": customer_id[lines["c"].to_numpy()],
        "product_id": product_id[lines["p"].to_numpy()],
        "order_id": lines["order_id"].to_numpy(),
        "order_date": order_time.loc[lines["order_id"].to_numpy()].to_numpy().astype("datetime64[us]"),
        "quantity": lines["quantity"].to_numpy(),
        "price": np.round(price[lines["p"].to_numpy()] * rng.uniform(0.95, 1.05, len(lines)), 2),
    })
    events = _events(order_frame, popularity, product_id, rng, views_per_purchase, carts_per_purchase)
    return Synthetic(order_frame, product_frame, customer_frame, events)


def _events(orders: pd.DataFrame, popularity: np.ndarray, product_id: np.ndarray, rng: np.random.Generator,
            views_per_purchase: float, carts_per_purchase: float) -> pd.DataFrame:
    """A purchase per order line; carts of bought items; views of bought and popular items."""
    n = len(orders)
    ts = orders["order_date"].to_numpy()
    users = orders["customer_id"].to_numpy()
    n_carts = int(round(n * carts_per_purchase))
    n_views = int(round(n * views_per_purchase))
    cart_src = rng.integers(0, n, n_carts) if n else np.zeros(0, np.int64)
    view_src = rng.integers(0, n, n_views) if n else np.zeros(0, np.int64)
    browsed = rng.random(n_views) < 0.5
    view_product = np.where(browsed, product_id[rng.choice(len(product_id), n_views, p=popularity)],
                            orders["product_id"].to_numpy()[view_src])
    before = lambda k: rng.integers(60, 3 * 86400, k).astype("timedelta64[s]")  # noqa: E731
    return pd.DataFrame({
        "user_id": np.concatenate([users, users[cart_src], users[view_src]]),
        "product_id": np.concatenate([orders["product_id"].to_numpy(), orders["product_id"].to_numpy()[cart_src],
                                      view_product]),
        "event_type": np.repeat(np.array(["purchase", "add_to_cart", "view"]), [n, n_carts, n_views]),
        "ts": np.concatenate([ts, ts[cart_src] - before(n_carts), ts[view_src] - before(n_views)]).astype("datetime64[us]"),
    })

"""User-category affinities and MySanta user profiles from decayed events, in numpy.

The arithmetic of include.models.popularity.category_affinity and user_profiles (the plain pandas
reference this is tested against), vectorised for a million users: users, categories and brands
become integer codes, per (user, label) sums are one bincount, the per-user maximum one reduceat,
and the top-n lists are built rank by rank over the whole array instead of per user.
"""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import numpy as np
import pandas as pd

from include.models.popularity import Decay, decayed


class Affinities(NamedTuple):
    """affinity: user_id, category, affinity in (0, 1] (1 for the user's strongest category), by
    user_id then category. profiles: user_id, preferred_categories, preferred_brands (comma-separated,
    strongest first), avg_price (mean price of the products interacted with, NaN without one),
    interaction_count, by user_id."""

    affinity: pd.DataFrame
    profiles: pd.DataFrame


def user_affinity(events: pd.DataFrame, products: pd.DataFrame, as_of: dt.datetime,
                  decay: Decay = Decay(30.0, 180.0), top_n: int = 3) -> Affinities:
    """Affinities and profiles of every user with an event that counts (see popularity.decayed).

    Args:
        events: user_id, product_id, event_type, ts.
        products: product_id (unique), category, brand, price; events of unknown products count
            towards interaction_count only.
        top_n: categories and brands listed in a profile.
    """
    keep, score = decayed(events, as_of, decay)
    users, user_ids = pd.factorize(events["user_id"].to_numpy()[keep], sort=True)
    n_users = len(user_ids)
    at = pd.Index(products["product_id"].to_numpy()).get_indexer(events["product_id"].to_numpy()[keep])
    known = at >= 0

    def labels(column: str) -> tuple[np.ndarray, np.ndarray]:
        """Per event the code of its product's `column` (-1 without), codes in name order."""
        codes, names = pd.factorize(products[column].to_numpy(dtype=object), sort=True)
        return np.where(known, codes[at], -1), np.asarray(names, dtype=object)

    category, categories = labels("category")
    brand, brands = labels("brand")

    user, cat, strength = _sums(users, category, score, len(categories))
    positive = strength > 0
    user, cat, strength = user[positive], cat[positive], strength[positive]
    affinity = strength / _per_user_max(strength, _starts(user))

    price = np.where(known, products["price"].to_numpy(dtype=float)[np.maximum(at, 0)], np.nan)
    priced = ~np.isnan(price)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg_price = (np.bincount(users[priced], weights=price[priced], minlength=n_users)
                     / np.bincount(users[priced], minlength=n_users))
    brand_user, brand_code, brand_score = _sums(users, brand, score, len(brands))
    profiles = pd.DataFrame({
        "user_id": user_ids,
        "preferred_categories": _top(user, cat, affinity, categories, top_n, n_users),
        "preferred_brands": _top(brand_user, brand_code, brand_score, brands, top_n, n_users),
        "avg_price": avg_price,
        "interaction_count": np.bincount(users, minlength=n_users),
    })
    return Affinities(pd.DataFrame({"user_id": user_ids[user], "category": categories[cat], "affinity": affinity}),
                      profiles)


def _sums(users: np.ndarray, labels: np.ndarray, score: np.ndarray,
          n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (user, label) of the events with a label: user code, label code, summed score; ordered by
    user then label."""
    has, width = labels >= 0, max(n_labels, 1)
    codes, keys = pd.factorize(users[has].astype(np.int64) * width + labels[has])
    sums = np.bincount(codes, weights=score[has], minlength=len(keys))
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    return keys // width, keys % width, sums[order]


def _starts(user: np.ndarray) -> np.ndarray:
    """The first row of each user (rows grouped by user)."""
    return np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.zeros(0, dtype=np.int64)


def _per_user_max(value: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each row, the largest value of its user (groups starting at `starts`)."""
    if len(value) == 0:
        return value
    return np.repeat(np.maximum.reduceat(value, starts), np.diff(np.r_[starts, len(value)]))


def _top(user: np.ndarray, label: np.ndarray, score: np.ndarray, names: np.ndarray, top_n: int,
         n_users: int) -> np.ndarray:
    """Per user the names of its top_n labels by score (ties: name order), comma-separated; '' without.
    Rows come grouped by user and in label order within a user (as _sums returns them), so each round
    takes every user's best remaining row with a few passes over the arrays, not a sort."""
    joined = np.full(n_users, "", dtype=object)
    if len(user) == 0:
        return joined
    starts = _starts(user)
    owners = user[starts]
    row = np.arange(len(user))
    remaining = score.astype(float).copy()
    for k in range(top_n):
        best = _per_user_max(remaining, starts)
        first = np.minimum.reduceat(np.where(remaining == best, row, len(user)), starts)
        found = (first < len(user)) & np.isfinite(remaining[np.minimum(first, len(user) - 1)])
        who, picked = owners[found], first[found]
        name = names[label[picked]]
        joined[who] = name if k == 0 else joined[who] + "," + name
        remaining[picked] = -np.inf
    return joined

"""Decayed event scores in pandas: popularity, segment popularity, category affinity, profiles.

popularity and popular_segments compute theirs in the database (update_popularity_scores.sql and
popular_segments.sql); user_affinity computes its own with include/models/affinity.py. This module
is the same arithmetic in plain pandas: the reference those are tested against and the pandas
baseline of the benchmarks. An event in the window (as_of - window_days, as_of] counts
weight(event_type) * 0.5 ** (age / half_life); events of other types are ignored, as are
events after as_of (the model never reads the clock).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

EVENT_TYPES = ("purchase", "add_to_cart", "view")


@dataclass(frozen=True)
class Decay:
    """Event weights, half-life and window of a decayed score.

    Args:
        half_life_days: days after which an event counts half.
        window_days: events older than this (relative to as_of) are left out.
        weights: weight per event type; types not listed count nothing.
    """

    half_life_days: float = 7.0
    window_days: float = 90.0
    weights: dict[str, float] = field(default_factory=lambda: {"purchase": 3.0, "add_to_cart": 2.0, "view": 1.0})

    def __post_init__(self) -> None:
        if not self.half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0, got {self.half_life_days}")
        if not self.window_days > 0:
            raise ValueError(f"window_days must be > 0, got {self.window_days}")
        unknown = set(self.weights) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"weights for unknown event types {sorted(unknown)}; expected {EVENT_TYPES}")
        if any(not (w >= 0 and math.isfinite(w)) for w in self.weights.values()):
            raise ValueError(f"weights must be finite and >= 0, got {self.weights}")

    @property
    def rate(self) -> float:
        """Decay per second: ln 2 / half-life."""
        return math.log(2.0) / (self.half_life_days * 86400.0)

    def since(self, as_of: dt.datetime) -> dt.datetime:
        return as_of - dt.timedelta(days=self.window_days)

    def sql_params(self, as_of: dt.datetime) -> dict:
        """The bound parameters of the SQL twins: window, weights, rate and as_of (naive UTC)."""
        epoch = (as_of - dt.datetime(1970, 1, 1)).total_seconds()
        return {"as_of": as_of, "as_of_epoch": epoch, "since": self.since(as_of), "rate": self.rate,
                "w_purchase": float(self.weights.get("purchase", 0.0)),
                "w_add_to_cart": float(self.weights.get("add_to_cart", 0.0)),
                "w_view": float(self.weights.get("view", 0.0))}


def decayed(events: pd.DataFrame, as_of: dt.datetime, decay: Decay) -> tuple[np.ndarray, np.ndarray]:
    """Which events count (a mask: in the window, of a known type) and their scores, weight x decay."""
    ts = pd.to_datetime(events["ts"]).to_numpy(dtype="datetime64[ns]")
    as_of_ts = np.datetime64(pd.Timestamp(as_of).to_datetime64(), "ns")
    since = np.datetime64(pd.Timestamp(decay.since(as_of)).to_datetime64(), "ns")
    kind = pd.Categorical(events["event_type"], categories=EVENT_TYPES).codes
    keep = (ts > since) & (ts <= as_of_ts) & (kind >= 0)
    weight = np.array([float(decay.weights.get(t, 0.0)) for t in EVENT_TYPES])
    age = (as_of_ts - ts[keep]) / np.timedelta64(1, "s")
    return keep, weight[kind[keep]] * np.exp(-decay.rate * age)


def scored_events(events: pd.DataFrame, as_of: dt.datetime, decay: Decay) -> pd.DataFrame:
    """The events in the window with a `score` column (weight x decay); other types dropped."""
    keep, score = decayed(events, as_of, decay)
    return events.loc[keep].assign(score=score)


def popularity_scores(events: pd.DataFrame, products: pd.DataFrame, as_of: dt.datetime,
                      decay: Decay = Decay()) -> pd.DataFrame:
    """product_id, score for every product of `products` (0 without events in the window)."""
    scored = scored_events(events, as_of, decay)
    sums = scored.groupby("product_id")["score"].sum()
    out = pd.DataFrame({"product_id": products["product_id"].to_numpy()})
    out["score"] = out["product_id"].map(sums).fillna(0.0).to_numpy(dtype=float)
    return out


def segment_popularity(events: pd.DataFrame, customers: pd.DataFrame, products: pd.DataFrame,
                       as_of: dt.datetime, decay: Decay = Decay(), top_n: int = 20) -> pd.DataFrame:
    """popular_items rows: per segment (gender, age_group, geo) value and category, the top_n
    products by decayed score, ranked from 1 (ties by product id)."""
    scored = scored_events(events, as_of, decay)
    people = customers.rename(columns={"customer_id": "user_id"})[["user_id", "gender", "age_group", "geo_id"]]
    scored = scored.merge(people, on="user_id").merge(
        products[["product_id", "category"]], on="product_id")
    scored["geo"] = scored["geo_id"].astype("Int64").astype(str).where(scored["geo_id"].notna())
    parts = []
    for segment_type, column in (("gender", "gender"), ("age_group", "age_group"), ("geo", "geo")):
        rows = scored.dropna(subset=[column, "category"])
        sums = rows.groupby([column, "category", "product_id"], as_index=False)["score"].sum()
        sums = sums[sums["score"] > 0].rename(columns={column: "segment_value"})
        sums["segment_type"] = segment_type
        parts.append(sums)
    ranked = pd.concat(parts, ignore_index=True).sort_values(
        ["segment_type", "segment_value", "category", "score", "product_id"],
        ascending=[True, True, True, False, True], ignore_index=True)
    ranked["rank"] = ranked.groupby(["segment_type", "segment_value", "category"]).cumcount() + 1
    ranked = ranked[ranked["rank"] <= top_n]
    return ranked[["segment_type", "segment_value", "category", "product_id", "rank", "score"]].reset_index(drop=True)


def category_affinity(events: pd.DataFrame, products: pd.DataFrame, as_of: dt.datetime,
                      decay: Decay = Decay(30.0, 180.0)) -> pd.DataFrame:
    """user_id, category, affinity: the decayed strength over the user's strongest category."""
    scored = scored_events(events, as_of, decay).merge(products[["product_id", "category"]], on="product_id")
    scored = scored.dropna(subset=["category"])
    strength = scored.groupby(["user_id", "category"], as_index=False)["score"].sum()
    strength = strength[strength["score"] > 0]
    strength["affinity"] = strength["score"] / strength.groupby("user_id")["score"].transform("max")
    return strength[["user_id", "category", "affinity"]].sort_values(["user_id", "category"], ignore_index=True)


def user_profiles(events: pd.DataFrame, products: pd.DataFrame, as_of: dt.datetime,
                  decay: Decay = Decay(30.0, 180.0), top_n: int = 3) -> pd.DataFrame:
    """user_id, preferred_categories, preferred_brands (comma-separated, strongest first),
    avg_price (mean price of the products interacted with) and interaction_count."""
    scored = scored_events(events, as_of, decay).merge(
        products[["product_id", "category", "brand", "price"]], on="product_id", how="left")

    def top(column: str, positive: bool = False) -> pd.Series:
        sums = scored.dropna(subset=[column]).groupby(["user_id", column], as_index=False)["score"].sum()
        if positive:  # categories rank as in category_affinity, which keeps strengths > 0 only
            sums = sums[sums["score"] > 0]
        sums = sums.sort_values(["user_id", "score", column], ascending=[True, False, True])
        sums = sums[sums.groupby("user_id").cumcount() < top_n]
        return sums.groupby("user_id")[column].agg(",".join)

    totals = scored.groupby("user_id").agg(interaction_count=("product_id", "size"), avg_price=("price", "mean"))
    totals["preferred_categories"] = top("category", positive=True).reindex(totals.index).fillna("")
    totals["preferred_brands"] = top("brand").reindex(totals.index).fillna("")
    return totals.reset_index()[["user_id", "preferred_categories", "preferred_brands", "avg_price",
                                 "interaction_count"]]

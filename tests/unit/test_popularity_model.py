"""The decayed event scores of include.models.popularity against values computed by hand."""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from include.models.popularity import (Decay, category_affinity, popularity_scores, scored_events,
                                       segment_popularity, user_profiles)

AS_OF = dt.datetime(2024, 6, 10, 12)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
EDGE = 2 ** (-(90 * 86400 - 1) / (7 * 86400))  # a view one second inside the 90-day window


def hand_events() -> pd.DataFrame:
    rows = [
        (1, 1, "purchase", AS_OF),                      # 3 x 1
        (1, 1, "view", AS_OF - 7 * DAY),                # 1 x 1/2 (one half-life)
        (2, 2, "add_to_cart", AS_OF - 14 * DAY),        # 2 x 1/4
        (2, 2, "purchase", AS_OF - 90 * DAY),           # on the window edge: out
        (2, 2, "view", AS_OF - 90 * DAY + SECOND),      # just inside
        (3, 3, "view", AS_OF + SECOND),                 # after as_of: out
        (3, 3, "add_to_cart", AS_OF - 3.5 * DAY),       # 2 x 2^-0.5
        (1, 4, "wishlist", AS_OF - DAY),                # unknown type: ignored
    ]
    return pd.DataFrame(rows, columns=["user_id", "product_id", "event_type", "ts"])


HAND_SCORES = {1: 3.5, 2: 0.5 + EDGE, 3: math.sqrt(2), 4: 0.0}
PRODUCTS = pd.DataFrame({"product_id": [1, 2, 3, 4], "category": ["a", "a", "b", "b"],
                         "brand": ["x", "y", "x", "y"], "price": [10.0, 20.0, 30.0, None]})


def test_popularity_scores_match_hand_computed_values():
    scores = popularity_scores(hand_events(), PRODUCTS, AS_OF).set_index("product_id")["score"]
    assert scores.to_dict() == pytest.approx(HAND_SCORES, rel=1e-12)


def test_weights_and_half_life_are_parameters():
    decay = Decay(half_life_days=3.5, window_days=10, weights={"purchase": 1.0, "add_to_cart": 0.0, "view": 4.0})
    scores = popularity_scores(hand_events(), PRODUCTS, AS_OF, decay).set_index("product_id")["score"]
    assert scores.to_dict() == pytest.approx({1: 1 + 4 * 0.25, 2: 0.0, 3: 0.0, 4: 0.0})


def test_unknown_event_types_and_events_outside_the_window_are_ignored():
    kept = scored_events(hand_events(), AS_OF, Decay())
    assert set(kept["event_type"]) == {"purchase", "view", "add_to_cart"}
    assert len(kept) == 5
    assert kept["ts"].max() == AS_OF and kept["ts"].min() == AS_OF - 90 * DAY + SECOND


@pytest.mark.parametrize("kwargs, message", [
    ({"half_life_days": 0}, "half_life_days"), ({"window_days": -1}, "window_days"),
    ({"weights": {"like": 1.0}}, "unknown event types"), ({"weights": {"view": -1.0}}, ">= 0"),
    ({"weights": {"view": float("nan")}}, "finite"),
])
def test_bad_decay_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Decay(**kwargs)


def test_sql_params_carry_the_same_decay():
    params = Decay(7, 90).sql_params(AS_OF)
    assert params["since"] == AS_OF - 90 * DAY
    assert math.exp(-params["rate"] * 7 * 86400) == pytest.approx(0.5)
    assert params["as_of_epoch"] == AS_OF.replace(tzinfo=dt.timezone.utc).timestamp()


def test_category_affinity_is_normalised_per_user():
    events = hand_events()
    affinity = category_affinity(events, PRODUCTS, AS_OF, Decay(7, 90))
    by_key = affinity.set_index(["user_id", "category"])["affinity"].to_dict()
    # user 2 only has category a; user 3 only b; user 1 has a (3.5) and the unknown-type event on b (ignored)
    assert by_key == pytest.approx({(1, "a"): 1.0, (2, "a"): 1.0, (3, "b"): 1.0})
    events.loc[len(events)] = (1, 3, "view", AS_OF)  # user 1: a = 3.5, b = 1
    affinity = category_affinity(events, PRODUCTS, AS_OF, Decay(7, 90)).set_index(["user_id", "category"])
    assert affinity.loc[(1, "b"), "affinity"] == pytest.approx(1 / 3.5)
    assert affinity["affinity"].between(0, 1, inclusive="right").all()


def test_user_profiles():
    events = hand_events()
    events.loc[len(events)] = (1, 3, "view", AS_OF)
    profiles = user_profiles(events, PRODUCTS, AS_OF, Decay(7, 90), top_n=1).set_index("user_id")
    assert profiles.loc[1, "preferred_categories"] == "a" and profiles.loc[1, "preferred_brands"] == "x"
    assert profiles.loc[1, "interaction_count"] == 3
    assert profiles.loc[1, "avg_price"] == pytest.approx((10 + 10 + 30) / 3)


def test_segment_popularity_ranks_per_segment_and_category():
    customers = pd.DataFrame({"customer_id": [1, 2, 3], "gender": ["f", "m", "f"], "age_group": ["25-34"] * 3,
                              "geo_id": [5, 5, None]})
    rows = segment_popularity(hand_events(), customers, PRODUCTS, AS_OF, top_n=1)
    got = {(r.segment_type, r.segment_value, r.category): (r.product_id, r.rank) for r in rows.itertuples()}
    assert got == {("gender", "f", "a"): (1, 1), ("gender", "f", "b"): (3, 1), ("gender", "m", "a"): (2, 1),
                   ("age_group", "25-34", "a"): (1, 1), ("age_group", "25-34", "b"): (3, 1),
                   ("geo", "5", "a"): (1, 1)}

"""include.models.affinity: hand-computed values, and the plain pandas reference on generated data."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from include.datasets.synthetic import generate
from include.models.affinity import user_affinity
from include.models.popularity import Decay, category_affinity, user_profiles
from tests.unit.test_popularity_model import AS_OF, PRODUCTS, hand_events


def test_hand_computed_affinities_and_profiles():
    events = hand_events()
    events.loc[len(events)] = (1, 3, "view", AS_OF)  # user 1: a = 3 + 1/2, b = 1
    events.loc[len(events)] = (4, 99, "view", AS_OF)  # an unknown product: counted, no label, no price
    got = user_affinity(events, PRODUCTS, AS_OF, Decay(7, 90), top_n=1)
    affinity = got.affinity.set_index(["user_id", "category"])["affinity"].to_dict()
    assert affinity == pytest.approx({(1, "a"): 1.0, (1, "b"): 1 / 3.5, (2, "a"): 1.0, (3, "b"): 1.0})
    profiles = got.profiles.set_index("user_id")
    assert profiles.loc[1].to_dict() == pytest.approx({"preferred_categories": "a", "preferred_brands": "x",
                                                       "avg_price": 50 / 3, "interaction_count": 3})
    assert profiles.loc[4, "interaction_count"] == 1 and profiles.loc[4, "preferred_categories"] == ""
    assert pd.isna(profiles.loc[4, "avg_price"]) and 4 not in got.affinity["user_id"].to_numpy()


def test_ties_rank_by_name_and_top_n_caps_the_lists():
    events = pd.DataFrame({"user_id": [7, 7, 7, 7], "product_id": [4, 3, 2, 1], "event_type": ["view"] * 4,
                           "ts": [AS_OF] * 4})  # four equal scores: brands y, x, y, x; categories b, b, a, a
    got = user_affinity(events, PRODUCTS, AS_OF, Decay(7, 90), top_n=2).profiles.iloc[0]
    assert got["preferred_categories"] == "a,b" and got["preferred_brands"] == "x,y"
    assert user_affinity(events.iloc[:0], PRODUCTS, AS_OF).profiles.empty


@pytest.mark.parametrize("top_n", [1, 3])
def test_equals_the_pandas_reference(top_n):
    data = generate(customers=300, products=60, start="2024-01-01", end="2024-06-03", seed=3)
    as_of, decay = dt.datetime(2024, 5, 20, 12), Decay(30.0, 60.0)
    got = user_affinity(data.events, data.products, as_of, decay, top_n)
    pd.testing.assert_frame_equal(got.affinity, category_affinity(data.events, data.products, as_of, decay),
                                  check_dtype=False, check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(got.profiles, user_profiles(data.events, data.products, as_of, decay, top_n),
                                  check_dtype=False, check_exact=False, rtol=1e-12)

"""DAG params shared by the event scoring DAGs (popularity, popular_segments, user_affinity).

Only airflow.sdk is imported, so DAG files can use these at parse time. A function, so every
DAG gets Param objects of its own.
"""
from __future__ import annotations

from airflow.sdk import Param


def score_params(half_life: str = "POPULARITY_HALF_LIFE_DAYS (7)",
                 window: str = "POPULARITY_WINDOW_DAYS (90)") -> dict[str, Param]:
    """as_of, decay, weights and freshness params; `half_life`/`window` name the fallbacks."""
    return {
        "as_of": Param(None, type=["null", "string"],
                       description="Score as of this ISO date-time (naive = UTC), e.g. 2024-12-29T23:00:00; "
                                   "empty: the run's time."),
        "half_life_days": Param(None, type=["null", "number"], exclusiveMinimum=0,
                                description=f"Half-life of an event's weight in days; empty: {half_life}."),
        "window_days": Param(None, type=["null", "number"], exclusiveMinimum=0,
                             description=f"Events of the last N days before as_of count; empty: {window}."),
        "weight_purchase": Param(None, type=["null", "number"], minimum=0,
                                 description="Weight of a purchase; empty: POPULARITY_WEIGHT_PURCHASE (3)."),
        "weight_add_to_cart": Param(None, type=["null", "number"], minimum=0,
                                    description="Weight of an add_to_cart; empty: POPULARITY_WEIGHT_ADD_TO_CART (2)."),
        "weight_view": Param(None, type=["null", "number"], minimum=0,
                             description="Weight of a view; empty: POPULARITY_WEIGHT_VIEW (1)."),
        "freshness_hours": Param(None, type=["null", "number"], exclusiveMinimum=0,
                                 description="Fail before any write when the newest event is older than this "
                                             "before as_of; empty: EVENTS_MAX_AGE_HOURS (24)."),
    }

"""cf_training's promotion rule: not worse than the promoted model beyond the tolerance."""
from __future__ import annotations

from include.jobs.cf_training import decide


def test_first_model_is_promoted():
    assert decide({"ndcg@10": 0.1, "users": 5}, None, 10, 0.02)[0]


def test_within_tolerance_is_promoted_beyond_is_kept_as_candidate():
    base = {"ndcg@10": 0.30, "users": 5}
    assert decide({"ndcg@10": 0.295, "users": 5}, base, 10, 0.02)[0]
    promote, reason = decide({"ndcg@10": 0.29, "users": 5}, base, 10, 0.02)
    assert not promote and "worse than the promoted model" in reason and "0.2940" in reason


def test_no_holdout_users_is_not_promoted():
    promote, reason = decide({"ndcg@10": 0.0, "users": 0}, None, 10, 0.02)
    assert not promote and "no holdout users" in reason

"""The as_of dates of a backfill: every day, one per ISO week for weekly_recs, one for faiss_rebuild."""
from __future__ import annotations

import datetime as dt

import pytest

from include.jobs.backfill import BackfillRun, dates


def _run(job: str, start: str, end: str, **ids) -> BackfillRun:
    return BackfillRun(job=job, start=dt.date.fromisoformat(start), end=dt.date.fromisoformat(end),
                       product_ids=ids.get("product_ids"), user_ids=ids.get("user_ids"), features=None,
                       dry_run=False, run_key="r")


def test_daily_jobs_take_every_day_oldest_first():
    assert [d["as_of"] for d in dates(_run("forecast_worker", "2024-02-27", "2024-03-01"))] == [
        "2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"]


@pytest.mark.parametrize("start, end, expected", [
    ("2024-05-27", "2024-06-09", [("2024-06-02", "2024-W22"), ("2024-06-09", "2024-W23")]),
    ("2024-05-29", "2024-06-04", [("2024-06-02", "2024-W22"), ("2024-06-04", "2024-W23")]),  # a partial last week
    ("2024-12-30", "2024-12-31", [("2024-12-31", "2025-W01")]),
])
def test_weekly_recs_takes_the_last_day_of_each_iso_week(start, end, expected):
    assert [(d["as_of"], d["week"]) for d in dates(_run("weekly_recs", start, end))] == expected


def test_faiss_rebuild_has_no_history_one_rebuild():
    assert dates(_run("faiss_rebuild", "2024-05-01", "2024-05-31")) == [{"as_of": "2024-05-31"}]


def test_ids_apply_to_their_job_only():
    run = _run("weekly_recs", "2024-05-01", "2024-05-02", user_ids=[3, 5])
    assert run.ids == [3, 5] and not run.whole
    assert _run("popularity", "2024-05-01", "2024-05-02").ids is None
    assert _run("forecast_worker", "2024-05-01", "2024-05-02", user_ids=[1]).ids is None


def test_the_dag_enum_of_features_is_the_jobs_own():
    from include.jobs import backfill, user_affinity

    assert backfill.FEATURES["user_affinity"] == tuple(user_affinity.FEATURES)

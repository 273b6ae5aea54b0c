"""The assets chain events -> popularity -> user_affinity (-> cf_training -> faiss_rebuild)."""
from __future__ import annotations

from pathlib import Path

import pytest

from include.jobs import assets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags():
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    return {d: bag.dags[d] for d in ("popularity", "popular_segments", "user_affinity")}


def _uris(items) -> set[str]:
    return {a.uri for a in items}


def test_producers_emit_their_assets(dags):
    assert _uris(dags["popularity"].get_task("publish").outlets) == {assets.POPULARITY.uri}
    assert _uris(dags["user_affinity"].get_task("publish").outlets) == {assets.USER_AFFINITY.uri}
    assert _uris(dags["popular_segments"].get_task("refresh").outlets) == {assets.POPULAR_SEGMENTS.uri}


def test_consumers_record_their_inputs(dags):
    assert _uris(dags["popularity"].get_task("check_inputs").inlets) == {assets.EVENTS.uri}
    assert _uris(dags["user_affinity"].get_task("check_inputs").inlets) == {assets.EVENTS.uri, assets.POPULARITY.uri}


def test_schedules(dags):
    """popularity polls the events every 5 minutes; the slower jobs keep their cron (see assets.py)."""
    assert dags["popularity"].timetable.expression == "*/5 * * * *"
    assert dags["popular_segments"].timetable.expression == "*/15 * * * *"
    assert dags["user_affinity"].timetable.expression == "30 2 * * *"


def test_later_jobs_have_their_assets():
    assert len({a.uri for a in (assets.EVENTS, assets.POPULARITY, assets.USER_AFFINITY, assets.CF_MODEL,
                                assets.FAISS_INDEX, assets.POPULAR_SEGMENTS)}) == 6

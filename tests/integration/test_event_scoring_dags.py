"""popularity, popular_segments and user_affinity under `airflow dags test` on real PostgreSQL and Redis."""
from __future__ import annotations

import pytest

from include.datasets.synthetic import generate
from tests.integration._event_data import load_events, scores, set_scores

AS_OF = "2024-06-02T23:00:00"


@pytest.fixture(scope="module")
def synthetic(database):
    data = generate(customers=300, products=60, start="2024-01-01", end="2024-06-03", seed=13)
    load_events(database, data.products, data.customers, data.events)
    return data


def _count(database, table: str) -> int:
    with database.conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed table names of this test
        value = cur.fetchone()[0]
    database.conn.commit()
    return value


def test_popularity_dag(dag_runner, database, redis_client, synthetic):
    out = dag_runner("popularity", {"as_of": AS_OF})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert sum(v > 0 for v in scores(database).values()) > 0
    assert 0 < redis_client.zcard("popular:global") <= 100
    assert len(list(redis_client.scan_iter("popular:category:*"))) > 0
    assert 0 < redis_client.ttl("popular:global") <= 900


def test_popularity_dag_stale_events_fail_and_keep_scores(dag_runner, database, redis_client, synthetic):
    set_scores(database, 5.0)
    out = dag_runner("popularity", {"as_of": "2024-07-01T00:00:00"})
    assert out.returncode != 0
    assert "events are stale" in out.stdout + out.stderr
    assert set(scores(database).values()) == {5.0}
    assert list(redis_client.scan_iter("popular:*")) == []


def test_popular_segments_dag(dag_runner, database, redis_client, synthetic):
    out = dag_runner("popular_segments", {"as_of": AS_OF})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    keys = list(redis_client.scan_iter("popular:segment:*"))
    assert keys and _count(database, "popular_items") > 0
    assert {k.decode().split(":")[2] for k in keys} == {"gender", "age_group", "geo"}
    assert 0 < redis_client.ttl(keys[0]) <= 900


def test_user_affinity_dag_full_then_incremental(dag_runner, database, redis_client, synthetic):
    out = dag_runner("user_affinity", {"as_of": "2024-06-01T23:00:00", "full_rebuild": True})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    users = _count(database, "user_profiles")
    assert users > 0 and _count(database, "user_category_affinity") >= users
    hashes = list(redis_client.scan_iter("affinity:user:*"))
    assert len(hashes) == users
    values = [float(v) for v in redis_client.hgetall(hashes[0]).values()]
    assert max(values) == 1.0 and all(0 < v <= 1 for v in values)

    out = dag_runner("user_affinity", {"as_of": AS_OF})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "incremental since 2024-06-01T23:00:00" in out.stdout + out.stderr


@pytest.fixture(scope="module")
def user_affinity_params():
    from pathlib import Path

    from airflow.models import DagBag

    path = Path(__file__).resolve().parents[2] / "dags" / "user_affinity.py"
    return DagBag(dag_folder=str(path)).dags["user_affinity"].params


@pytest.mark.parametrize("name, value, ok", [
    ("user_ids", None, True), ("user_ids", [1, 2], True), ("user_ids", list(range(1, 10_001)), True),
    ("user_ids", list(range(1, 10_002)), False), ("user_ids", [0], False), ("user_ids", ["7"], False),
    ("features", None, True), ("features", ["profiles"], True), ("features", ["affinity", "profiles"], True),
    ("features", [], False), ("features", ["popularity"], False),
])
def test_user_affinity_params_bound_the_conf(user_affinity_params, name, value, ok):
    """A backfill triggers user_affinity with these: at most 10,000 ids >= 1; a non-empty subset of features."""
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    param = copy.deepcopy(user_affinity_params.get_param(name))
    if ok:
        assert param.resolve(value) == value
    else:
        with pytest.raises(ParamValidationError):
            param.resolve(value)

"""user_affinity steps on real PostgreSQL and Redis: an incremental run equals a full rebuild,
the job equals the plain pandas reference, the gates keep the previous values."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.datasets.synthetic import generate
from include.jobs import user_affinity as job
from include.models.popularity import Decay, category_affinity, user_profiles
from tests.integration._event_data import load_events

NOW = dt.datetime.now(dt.timezone.utc)
FIRST, SECOND, LATER = dt.datetime(2024, 4, 20, 12), dt.datetime(2024, 4, 23, 12), dt.datetime(2024, 5, 25, 12)
WINDOW = 60  # days: events leave the window between the runs


@pytest.fixture(scope="module")
def synthetic(database):
    data = generate(customers=400, products=80, start="2024-01-01", end="2024-06-03", seed=8)
    load_events(database, data.products, data.customers, data.events)
    return data


def _affinity_run(as_of: dt.datetime, full: bool = False, **params) -> job.AffinityRun:
    conf = {"as_of": as_of.isoformat(), "window_days": WINDOW, "full_rebuild": full, **params}
    return job.AffinityRun.from_params(conf, NOW, NOW, job.read_watermark(), f"test:{as_of.isoformat()}")


def _run(as_of: dt.datetime, full: bool = False, **params) -> dict:
    run = _affinity_run(as_of, full, **params)
    return job.publish(run, job.compute(run, job.check_inputs(run)))


def _tables(database) -> tuple[pd.DataFrame, pd.DataFrame]:
    with database.conn.cursor() as cur:
        cur.execute("SELECT user_id, category, affinity FROM user_category_affinity ORDER BY user_id, category")
        affinity = pd.DataFrame(cur.fetchall(), columns=["user_id", "category", "affinity"])
        cur.execute("SELECT user_id, preferred_categories, preferred_brands, avg_price, interaction_count "
                    "FROM user_profiles ORDER BY user_id")
        profiles = pd.DataFrame(cur.fetchall(), columns=["user_id", "preferred_categories", "preferred_brands",
                                                         "avg_price", "interaction_count"])
    database.conn.commit()
    return affinity, profiles


def _hashes(redis_client) -> dict[int, dict[str, float]]:
    return {int(k.decode().rsplit(":", 1)[1]): {c.decode(): float(v) for c, v in redis_client.hgetall(k).items()}
            for k in redis_client.scan_iter("affinity:user:*")}


def test_incremental_run_equals_a_full_rebuild(database, redis_client, synthetic):
    first = _run(FIRST)
    assert first["mode"] == "full" and job.read_watermark() == FIRST
    second = _run(SECOND)
    assert second["mode"] == "incremental"
    assert 0 < second["users_recomputed"] < synthetic.customers.shape[0]
    affinity_inc, profiles_inc = _tables(database)
    hashes_inc = _hashes(redis_client)

    full = _run(SECOND, full=True)
    assert full["mode"] == "full" and full["users_recomputed"] > 2 * second["users_recomputed"]
    affinity_full, profiles_full = _tables(database)
    hashes_full = _hashes(redis_client)

    pd.testing.assert_frame_equal(affinity_inc.drop(columns="affinity"), affinity_full.drop(columns="affinity"))
    assert affinity_inc["affinity"].to_numpy() == pytest.approx(affinity_full["affinity"].to_numpy(), rel=1e-9)
    pd.testing.assert_frame_equal(profiles_inc, profiles_full, check_exact=False, rtol=1e-9)
    assert hashes_inc.keys() == hashes_full.keys()
    for user, hashed in hashes_full.items():
        assert hashes_inc[user] == pytest.approx(hashed, rel=1e-9)

    # and both equal the plain pandas reference on the same data
    decay = Decay(30.0, WINDOW)
    expected = category_affinity(synthetic.events, synthetic.products, SECOND, decay)
    pd.testing.assert_frame_equal(affinity_full.drop(columns="affinity"), expected.drop(columns="affinity"),
                                  check_dtype=False)
    assert affinity_full["affinity"].to_numpy() == pytest.approx(expected["affinity"].to_numpy(), rel=1e-9)
    assert set(hashes_full) == set(expected["user_id"])
    model_profiles = user_profiles(synthetic.events, synthetic.products, SECOND, decay, top_n=3)
    pd.testing.assert_frame_equal(profiles_full, model_profiles, check_dtype=False, check_exact=False, rtol=1e-9)


def test_users_whose_events_all_left_the_window_are_removed(database, redis_client, synthetic):
    _run(FIRST, full=True)
    before = set(_tables(database)[1]["user_id"])
    _run(LATER)
    after = set(_tables(database)[1]["user_id"])
    gone = before - after
    window_start = LATER - dt.timedelta(days=WINDOW)
    events = synthetic.events
    active = set(events.loc[(events["ts"] > window_start) & (events["ts"] <= LATER), "user_id"])
    assert after == active and gone  # some users dropped out and lost their rows
    assert job.read_watermark() == LATER
    assert not any(redis_client.exists(f"affinity:user:{u}") for u in gone)


def test_a_failing_gate_keeps_the_previous_values(database, redis_client, synthetic):
    _run(FIRST, full=True)
    tables = _tables(database)
    with pytest.raises(AirflowFailException, match="events are stale"):
        _run(dt.datetime(2024, 9, 1))
    pd.testing.assert_frame_equal(_tables(database)[0], tables[0])
    assert job.read_watermark() == FIRST
    with pytest.raises(AirflowFailException, match="all event weights are 0"):
        _affinity_run(SECOND, weight_purchase=0, weight_add_to_cart=0, weight_view=0)


def test_nothing_new_recomputes_nobody(database, redis_client, synthetic):
    _run(FIRST, full=True)
    again = _run(FIRST)
    assert again["mode"] == "incremental" and again["users_recomputed"] == 0


def test_a_full_rebuild_killed_mid_write_keeps_the_previous_rows(database, redis_client, synthetic):
    """The full rebuild empties both tables (TRUNCATE) before loading them; a load that dies after
    that, here on the profiles, must roll the TRUNCATE back with the rest."""
    _run(FIRST, full=True)
    before = _tables(database)
    with database.conn.cursor() as cur:
        cur.execute("""CREATE OR REPLACE FUNCTION fail_profile_load() RETURNS trigger AS $$
                       BEGIN RAISE EXCEPTION 'killed mid-way'; END $$ LANGUAGE plpgsql""")
        cur.execute("CREATE TRIGGER kill_profiles BEFORE INSERT ON user_profiles FOR EACH ROW "
                    "EXECUTE FUNCTION fail_profile_load()")
    database.conn.commit()
    try:
        run = _affinity_run(SECOND, full=True)
        with pytest.raises(AirflowFailException, match="replacing the affinities and profiles .* killed mid-way"):
            job.compute(run, job.check_inputs(run))
    finally:
        with database.conn.cursor() as cur:
            cur.execute("DROP TRIGGER IF EXISTS kill_profiles ON user_profiles")
        database.conn.commit()
    after = _tables(database)
    assert len(before[0]) > 0 and len(before[1]) > 0
    pd.testing.assert_frame_equal(after[0], before[0])
    pd.testing.assert_frame_equal(after[1], before[1])
    assert job.read_watermark() == FIRST


def test_a_backfill_between_compute_and_publish_keeps_its_own_users(database, redis_client, synthetic):
    """Runs key their users to recompute: a backfill of one user between the scheduled run's compute
    and publish neither shrinks nor grows the set that publish writes to Redis."""
    import dataclasses

    _run(FIRST, full=True)
    run = _affinity_run(SECOND)
    stats = job.compute(run, job.check_inputs(run))
    backfill = dataclasses.replace(run, run_key="backfill:one-user")
    job.compute(backfill, user_ids=[int(synthetic.customers["customer_id"].iloc[0])])
    published = job.publish(run, stats)
    assert 1 < stats["users_recomputed"] == published["redis_users"]
    with database.conn.cursor() as cur:
        cur.execute("SELECT run_key, COUNT(*) FROM user_affinity_recompute GROUP BY run_key")
        left = dict(cur.fetchall())
    database.conn.commit()
    assert left == {"backfill:one-user": 1}  # publish cleared its own run's set only


def test_only_a_whole_run_moves_the_watermark(database, redis_client, synthetic):
    """A run for some users or some features leaves the watermark; a whole run sets it to its as_of,
    back too: older than the watermark it is a full rebuild, so the tables describe that as_of."""
    _run(SECOND, full=True)
    user = int(synthetic.customers["customer_id"].iloc[0])
    run = _affinity_run(LATER)
    assert not job.publish(run, job.compute(run, user_ids=[user]))["watermark_moved"]
    assert not job.publish(run, job.compute(run, features=["profiles"]))["watermark_moved"]
    assert job.read_watermark() == SECOND
    older = _run(FIRST)
    assert older["mode"] == "full" and older["watermark_moved"] and job.read_watermark() == FIRST
    with pytest.raises(ValueError, match="features must be a non-empty subset"):
        job.compute(run, features=["popularity"])

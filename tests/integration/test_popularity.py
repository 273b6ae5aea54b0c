"""popularity and popular_segments steps on real PostgreSQL and Redis: scores against hand-computed
values, atomicity, the data-quality gates, the Redis sorted sets and popular_items."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.datasets.synthetic import generate
from include.jobs import popularity as job
from include.models.popularity import Decay, segment_popularity
from tests.integration._event_data import load_events, scores, set_scores
from tests.unit.test_popularity_model import AS_OF, DAY, HAND_SCORES, PRODUCTS, hand_events

NOW = dt.datetime.now(dt.timezone.utc)


def _run(as_of=AS_OF, segments=False, **params) -> job.PopularityRun:
    return job.PopularityRun.from_params({"as_of": as_of.isoformat(), **params}, NOW, NOW, segments=segments)


@pytest.fixture
def hand_data(database):
    known = hand_events()
    known = known[known["event_type"] != "wishlist"]
    customers = pd.DataFrame({"customer_id": [1, 2, 3], "gender": ["f", "m", "f"], "age_group": ["25-34"] * 3,
                              "geo_id": [5, 5, None]})
    load_events(database, PRODUCTS, customers, known)
    return known


def test_scores_match_hand_computed_values(database, hand_data):
    run = _run()
    stats = job.score(run, job.check_inputs(run))
    assert scores(database) == pytest.approx(HAND_SCORES, rel=1e-9)
    assert stats["products"] == 4 and stats["scored"] == 3


def test_unknown_event_types_are_rejected_by_the_schema(database, hand_data):
    with pytest.raises(psycopg.errors.CheckViolation):
        with database.conn.cursor() as cur:
            cur.execute("INSERT INTO events (user_id, product_id, event_type, ts) VALUES (1, 4, 'wishlist', %s)",
                        (AS_OF,))
    database.conn.rollback()


def test_unknown_event_types_are_ignored_by_the_scoring_sql(database, hand_data):
    """A source without the CHECK constraint: the statement scores the known types only."""
    with database.conn.cursor() as cur:
        cur.execute("ALTER TABLE events DROP CONSTRAINT IF EXISTS events_event_type_check")
        cur.execute("INSERT INTO events (user_id, product_id, event_type, ts) VALUES (1, 4, 'wishlist', %s)",
                    (AS_OF - DAY,))
        cur.execute(database.sql("update_popularity_scores"), Decay().sql_params(AS_OF))
        cur.execute(database.sql("events_quality"), {"since": AS_OF - 90 * DAY, "as_of": AS_OF})
        unknown = cur.fetchone()[-1]
        cur.execute('SELECT popularity_score FROM "Product" WHERE "ID" = 4')
        score4 = cur.fetchone()[0]
    database.conn.rollback()  # DDL is transactional: the constraint is back
    assert unknown == 1 and score4 == 0.0


def test_a_statement_failing_mid_way_leaves_the_old_scores(database, hand_data):
    set_scores(database, 7.0)
    with database.conn.cursor() as cur:  # product 3 is updated after others have been: the UPDATE dies mid-way
        cur.execute("""CREATE OR REPLACE FUNCTION fail_on_product_3() RETURNS trigger AS $$
                       BEGIN IF NEW."ID" = 3 THEN RAISE EXCEPTION 'killed mid-way'; END IF; RETURN NEW; END
                       $$ LANGUAGE plpgsql""")
        cur.execute('CREATE TRIGGER kill_update BEFORE UPDATE ON "Product" FOR EACH ROW '
                    "EXECUTE FUNCTION fail_on_product_3()")
    database.conn.commit()
    try:
        with pytest.raises(psycopg.errors.RaiseException, match="killed mid-way"):
            job.score(_run())
        assert scores(database) == {1: 7.0, 2: 7.0, 3: 7.0, 4: 7.0}
    finally:
        with database.conn.cursor() as cur:
            cur.execute('DROP TRIGGER IF EXISTS kill_update ON "Product"')
        database.conn.commit()


def test_failing_post_check_rolls_back(database, hand_data):
    set_scores(database, 7.0)
    run = _run(weight_purchase=0, weight_add_to_cart=0, weight_view=0)
    with pytest.raises(AirflowFailException, match="no product got a score > 0 from 5 events"):
        job.score(run, job.check_inputs(run))
    assert scores(database) == {1: 7.0, 2: 7.0, 3: 7.0, 4: 7.0}


def test_stale_events_fail_the_pre_check(database, hand_data):
    with pytest.raises(AirflowFailException, match=r"events are stale: expected an event within 24 h"):
        job.check_inputs(_run(as_of=AS_OF + 2 * DAY))
    assert job.check_inputs(_run(as_of=AS_OF + 2 * DAY, freshness_hours=49))["events_in_window"] == 5


def test_publish_writes_sorted_sets(database, redis_client, hand_data):
    run = _run()
    job.publish(run, job.score(run))
    top = redis_client.zrevrange("popular:global", 0, -1, withscores=True)
    assert [int(m) for m, _ in top] == [1, 3, 2]  # product 4 has no events: not popular
    assert top[0][1] == pytest.approx(3.5)
    assert [int(m) for m in redis_client.zrevrange("popular:category:a", 0, -1)] == [1, 2]
    assert [int(m) for m in redis_client.zrevrange("popular:category:b", 0, -1)] == [3]
    assert 0 < redis_client.ttl("popular:global") <= 900
    job.publish(_run(top_n=1), {})  # replaced, not merged
    assert redis_client.zcard("popular:global") == 1 and redis_client.zcard("popular:category:a") == 1


@pytest.fixture(scope="module")
def synthetic(database):
    data = generate(customers=400, products=80, start="2024-01-01", end="2024-06-03", seed=21)
    load_events(database, data.products, data.customers, data.events)
    return data


def test_scores_equal_the_pandas_model_on_synthetic_data(database, synthetic):
    from include.models.popularity import popularity_scores

    as_of = dt.datetime(2024, 6, 1, 12)
    job.score(_run(as_of))
    expected = popularity_scores(synthetic.events, synthetic.products, as_of).set_index("product_id")["score"]
    assert scores(database) == pytest.approx(expected.to_dict(), rel=1e-9)


def test_segments_equal_the_pandas_model(database, redis_client, synthetic):
    as_of = dt.datetime(2024, 6, 1, 12)
    run = _run(as_of, segments=True)
    stats = job.refresh_segments(run, job.check_inputs(run, job.SEGMENTS_JOB))
    expected = segment_popularity(synthetic.events, synthetic.customers, synthetic.products, as_of, top_n=20)
    with database.conn.cursor() as cur:
        cur.execute("SELECT segment_type, segment_value, category, product_id, rank, score FROM popular_items "
                    "ORDER BY segment_type, segment_value, category, rank")
        rows = pd.DataFrame(cur.fetchall(), columns=list(expected.columns))
    database.conn.commit()
    expected = expected.sort_values(["segment_type", "segment_value", "category", "rank"], ignore_index=True)
    assert stats["rows"] == len(expected) > 0
    pd.testing.assert_frame_equal(rows.drop(columns="score"), expected.drop(columns="score"), check_dtype=False)
    assert rows["score"].to_numpy() == pytest.approx(expected["score"].to_numpy(), rel=1e-9)
    assert set(rows["segment_type"]) == {"gender", "age_group", "geo"}

    first = expected.iloc[0]
    key = f"popular:segment:{first.segment_type}:{first.segment_value}:{first.category}"
    members = redis_client.zrevrange(key, 0, -1)
    group = expected[(expected.segment_type == first.segment_type) & (expected.segment_value == first.segment_value)
                     & (expected.category == first.category)]
    assert [int(m) for m in members] == group["product_id"].tolist()
    assert 0 < redis_client.ttl(key) <= 900
    assert len(list(redis_client.scan_iter("popular:segment:*"))) == stats["redis_keys"]

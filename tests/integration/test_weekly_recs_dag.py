"""weekly_recs under `airflow dags test` on real PostgreSQL and Redis."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate

AS_OF, WEEK = "2024-06-02", "2024-W22"
NEXT_AS_OF, NEXT_WEEK = "2024-06-09", "2024-W23"


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=400, products=80, start="2023-01-02", end="2024-06-10", seed=21)
    load_source(database, data.orders, data.products, data.customers)
    return data


def _active(data, as_of: str) -> set[int]:
    until = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    recent = data.orders[(data.orders["order_date"] >= until - pd.Timedelta(days=90))
                         & (data.orders["order_date"] < until)]
    c = data.customers.set_index("customer_id")
    ok = c[(c["is_active"] == 1) & (c["is_blocked"] == 0) & (c["deleted"] == 0)].index
    return set(recent["customer_id"]) & set(ok)


def _backup(database, week: str) -> pd.DataFrame:
    with database.conn.cursor() as cur:
        cur.execute('SELECT "CustomerID", "ProductID", "Rank", "Score", "Source" FROM "WeeklyRecommendation" '
                    'WHERE "Week" = %s ORDER BY 1, 3', (week,))
        rows = cur.fetchall()
    database.conn.commit()
    return pd.DataFrame(rows, columns=["customer", "product", "rank", "score", "source"])


def _sql_delete_week(database, week: str) -> None:
    with database.conn.cursor() as cur:
        cur.execute('DELETE FROM "WeeklyRecommendation" WHERE "Week" = %s', (week,))
    database.conn.commit()


def test_recommends_every_active_customer(dag_runner, database, redis_client, data):
    out = dag_runner("weekly_recs", {"as_of_date": AS_OF, "shard_count": 3})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    active = _active(data, AS_OF)
    assert len(active) > 50
    keys = {int(k.decode().split(":")[1]) for k in redis_client.scan_iter(f"{WEEK}:*")}
    assert keys == active, "exactly the active customers: blocked, deleted, inactive and lapsed ones get nothing"
    assert redis_client.get("recs:current_week") == WEEK.encode()
    assert redis_client.ttl("recs:current_week") == -1
    meta = json.loads(redis_client.get("recs:metadata:last_run"))
    assert meta["week"] == WEEK and meta["processed"] == len(active) and meta["successful"] == len(active)
    assert meta["total_recommendations"] == 25 * len(active) and meta["failed"] == 0
    assert {"discovery_recommendations", "duration_seconds", "rate_per_second", "last_week"} <= set(meta)

    catalogue = set(data.products["product_id"])
    for customer in sorted(keys)[:20]:
        key = f"{WEEK}:{customer}"
        assert 690000 < redis_client.ttl(key) <= 691200
        doc = json.loads(redis_client.get(key))
        assert doc["customer_id"] == customer and doc["week"] == WEEK and doc["generated_at"]
        recs = doc["recommendations"]
        assert [r["rank"] for r in recs] == list(range(1, 26))
        assert len({r["product_id"] for r in recs}) == 25 and {r["product_id"] for r in recs} <= catalogue
        for r in recs:
            assert 0.0 <= r["score"] <= 1.0
            assert r["source"] in {"repeat", "collaborative", "similar", "discovery", "hybrid"}
            assert set(r) == {"product_id", "product_name", "score", "source", "category", "predicted_quantity",
                              "last_purchased", "purchase_frequency_days", "rank"}

    backup = _backup(database, WEEK)
    assert len(backup) == 25 * len(active) and set(backup["customer"]) == active
    assert not backup.duplicated(["customer", "rank"]).any()


def test_rerun_and_retried_shard_are_idempotent(dag_runner, database, redis_client, data):
    from include.jobs import weekly_recs as job
    from include.runtime import staging

    # the job's steps in process, 3 shards; a shard retried by Airflow runs again with the same descriptor
    redis_client.flushdb()
    _sql_delete_week(database, WEEK)
    run = job.RecsRun.from_params({"as_of_date": AS_OF, "shard_count": 3}, None, pd.Timestamp.now().date(), "retry")
    model_dir = job.prepare(run)["model_dir"]
    shards = job.plan(run)
    stats = [job.process_shard(run, descriptor, model_dir) for descriptor in shards]
    staged = staging.load(job.JOB, run.run_key, 1, 3)
    retried = job.process_shard(run, shards[1], model_dir)
    assert retried["staged_rows"] == stats[1]["staged_rows"] == len(staged) > 0
    pd.testing.assert_frame_equal(staging.load(job.JOB, run.run_key, 1, 3).drop(columns="GeneratedAt"),
                                  staged.drop(columns="GeneratedAt"))
    assert _backup(database, WEEK).empty and not list(redis_client.scan_iter(f"{WEEK}:*")), "staging writes nothing live"

    published = [job.publish_shard(run, descriptor) for descriptor in shards]
    before = _backup(database, WEEK)
    assert len(before) == sum(p["backup_rows"] for p in published) == 25 * len(_active(data, AS_OF))
    assert job.publish_shard(run, shards[1])["backup_rows"] == published[1]["backup_rows"]  # a retried publish
    pd.testing.assert_frame_equal(_backup(database, WEEK), before)

    # a rerun of the whole DAG with other shards replaces the week's rows, never adds to them
    out = dag_runner("weekly_recs", {"as_of_date": AS_OF, "shard_count": 2})
    assert out.returncode == 0, out.stderr[-3000:]
    after = _backup(database, WEEK)
    assert len(after) == len(before) and set(after["customer"]) == set(before["customer"])


def test_a_shard_read_in_parts_stages_the_same_rows_and_a_failure_keeps_the_old(database, data, monkeypatch):
    from include.jobs import weekly_recs as job
    from include.models.recommender import HybridRecommender
    from include.runtime import staging

    run = job.RecsRun.from_params({"as_of_date": AS_OF, "shard_count": 2}, None, pd.Timestamp.now().date(), "parts")
    model_dir = job.prepare(run)["model_dir"]
    shard = job.plan(run)[0]
    whole = job.process_shard(run, shard, model_dir)
    rows = staging.load(job.JOB, run.run_key, 0, 2).drop(columns="GeneratedAt")
    parts = job.process_shard(run, shard, model_dir, read_size=7, batch_size=3)
    compared = ("customers", "successful", "failed", "staged_rows", "order_lines")
    assert {k: parts[k] for k in compared} == {k: whole[k] for k in compared}
    assert parts["customers"] > 14 and parts["failed"] == 0
    pd.testing.assert_frame_equal(staging.load(job.JOB, run.run_key, 0, 2).drop(columns="GeneratedAt"), rows)

    recommend, calls = HybridRecommender.recommend, []

    def fails_on_the_third_batch(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("the shard dies after two batches were loaded")
        return recommend(self, *args)

    monkeypatch.setattr(HybridRecommender, "recommend", fails_on_the_third_batch)
    with pytest.raises(MemoryError):
        job.process_shard(run, shard, model_dir, read_size=7, batch_size=3)
    pd.testing.assert_frame_equal(staging.load(job.JOB, run.run_key, 0, 2).drop(columns="GeneratedAt"), rows)


def test_failed_validation_keeps_the_previous_week_live(dag_runner, redis_client, data):
    redis_client.set("recs:current_week", WEEK)
    out = dag_runner("weekly_recs", {"as_of_date": NEXT_AS_OF}, env={"RECS_MIN_COVERAGE": "1.01"})
    assert out.returncode != 0
    assert "validation failed (coverage)" in out.stdout + out.stderr
    assert redis_client.get("recs:current_week") == WEEK.encode()


def test_feedback_measures_last_weeks_recommendations(dag_runner, redis_client, data, database):
    out = dag_runner("weekly_recs", {"as_of_date": NEXT_AS_OF})
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads(redis_client.get("recs:metadata:last_run"))
    assert redis_client.get("recs:current_week") == NEXT_WEEK.encode()
    feedback = meta["last_week"]
    assert feedback["week"] == WEEK and feedback["customers_recommended"] > 0
    # against the orders of the week after AS_OF, computed here from the frames
    recs = _backup(database, WEEK)
    week = data.orders[(data.orders["order_date"] >= pd.Timestamp(AS_OF) + pd.Timedelta(days=1))
                       & (data.orders["order_date"] < pd.Timestamp(NEXT_AS_OF) + pd.Timedelta(days=1))]
    bought = week[week["customer_id"].isin(recs["customer"])][["customer_id", "product_id"]].drop_duplicates()
    hits = bought.merge(recs, left_on=["customer_id", "product_id"], right_on=["customer", "product"])
    assert feedback["customers_ordered"] == bought["customer_id"].nunique()
    assert feedback["recall@25"] == round(len(hits) / len(bought), 4)
    assert feedback["hit_rate"] == round(hits["customer_id"].nunique() / bought["customer_id"].nunique(), 4)


def test_dry_run_writes_nothing(dag_runner, redis_client, data):
    out = dag_runner("weekly_recs", {"as_of_date": AS_OF, "dry_run": True, "limit": 30})
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(redis_client.scan_iter("20*:*")) + list(redis_client.scan_iter("recs:*")) == []


@pytest.mark.parametrize("conf, message", [
    ({"week": "2024-22"}, "Invalid input for param week"),
    ({"week": "2024-W99"}, "week must be an ISO week"),
    ({"as_of_date": "2999-01-01"}, "is in the future"),
    ({"top_n": 0}, "Invalid input for param top_n"),
    ({"shard_count": 2000}, "Invalid input for param shard_count"),
], ids=["week-format", "week-number", "future", "top-n", "shards"])
def test_bad_params_are_rejected(dag_runner, redis_client, data, conf, message):
    out = dag_runner("weekly_recs", {"as_of_date": AS_OF, **conf})
    assert out.returncode != 0 and message in out.stdout + out.stderr
    assert list(redis_client.scan_iter("20*:*")) + list(redis_client.scan_iter("recs:*")) == []

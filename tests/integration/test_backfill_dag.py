"""backfill under `airflow dags test` on real PostgreSQL and Redis: entity filters, pointers that
stay, the report, retried and failed entities, and a conf with each kind of mistake."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from tests.integration.test_weekly_recs_dag import _active

START, END = "2024-05-27", "2024-06-09"  # ISO weeks 2024-W22 and 2024-W23
WEEKS = {"2024-06-02": "2024-W22", "2024-06-09": "2024-W23"}
AS_OF = "2024-06-02"


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=200, products=50, start="2023-01-02", end="2024-06-10", seed=7)
    load_source(database, data.orders, data.products, data.customers, data.events)
    return data


def _sql(database, statement: str, params: tuple = ()) -> list[tuple]:
    with database.conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
    database.conn.commit()
    return rows


def _report(database, job: str) -> pd.DataFrame:
    rows = _sql(database, "SELECT run_id, as_of, succeeded, failed, skipped, detail FROM backfill_report "
                          "WHERE job_name = %s ORDER BY as_of", (job,))
    return pd.DataFrame(rows, columns=["run_id", "as_of", "succeeded", "failed", "skipped", "detail"])


def test_weekly_recs_for_some_customers_keeps_the_current_week(dag_runner, database, redis_client, data):
    both = _active(data, "2024-06-02") & _active(data, "2024-06-09")
    inactive = sorted(set(data.customers["customer_id"]) - _active(data, "2024-06-09") - _active(data, "2024-06-02"))
    chosen, other = sorted(both)[:3], sorted(both)[3]
    redis_client.set("recs:current_week", "2024-W30")
    redis_client.set(f"2024-W22:{inactive[0]}", "stale")  # must not survive: the customer now gets nothing
    redis_client.set(f"2024-W22:{other}", "not targeted")
    _sql(database, 'INSERT INTO "WeeklyRecommendation" VALUES (%s, %s, 1, 1, 0.5, %s, %s)',
         (other, "2024-W22", "repeat", pd.Timestamp("2024-06-03")))

    out = dag_runner("backfill", {"job": "weekly_recs", "start_date": START, "end_date": END,
                                  "user_ids": chosen + [inactive[0]]})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    for week in WEEKS.values():
        keys = {int(k.decode().split(":")[1]) for k in redis_client.scan_iter(f"{week}:*")}
        assert keys == set(chosen) | ({other} if week == "2024-W22" else set())
        doc = json.loads(redis_client.get(f"{week}:{chosen[0]}"))
        assert doc["week"] == week and len(doc["recommendations"]) == 25
        rows = _sql(database, 'SELECT "CustomerID", count(*) FROM "WeeklyRecommendation" WHERE "Week" = %s '
                              'GROUP BY 1 ORDER BY 1', (week,))
        assert dict(rows) == {**{c: 25 for c in chosen}, **({other: 1} if week == "2024-W22" else {})}
    assert redis_client.get(f"2024-W22:{other}") == b"not targeted"
    assert redis_client.get("recs:current_week") == b"2024-W30" and redis_client.get("recs:metadata:last_run") is None

    report = _report(database, "weekly_recs")
    assert [str(d) for d in report["as_of"]] == list(WEEKS) and report["run_id"].nunique() == 1
    assert report["succeeded"].tolist() == [3, 3] and report["failed"].tolist() == [0, 0]
    assert report["skipped"].tolist() == [1, 1]
    detail = json.loads(report["detail"].iloc[0])
    assert detail["status"] == "succeeded" and detail["week"] == "2024-W22" and detail["skipped_ids"] == [inactive[0]]


def test_forecast_for_some_products_retries_the_failed_one_and_reports_partial(dag_runner, database, redis_client,
                                                                               data):
    counts = data.orders.groupby("product_id")["order_id"].nunique().sort_values(ascending=False)
    good, bad = [int(p) for p in counts.index[1:3]], int(counts.index[0])
    _sql(database, 'INSERT INTO "OrderItem" ("ID", "OrderID", "ProductID", "Quantity", "Price") '
                   "VALUES (%s, %s, %s, 'Infinity', 1.0)",
         (len(data.orders) + 1, int(data.orders["order_id"].iloc[0]), bad))
    redis_client.set("forecast:metadata:last_run", json.dumps({"as_of_date": "2024-06-09"}))
    try:
        # no quantity limit, so the infinite line reaches the engine and the product fails
        out = dag_runner("backfill", {"job": "forecast_worker", "start_date": AS_OF, "end_date": AS_OF,
                                      "product_ids": good + [bad]}, env={"SOURCE_MAX_QUANTITY": "inf"})
    finally:
        _sql(database, 'DELETE FROM "OrderItem" WHERE "ID" = %s', (len(data.orders) + 1,))
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "backfill of forecast_worker partial" in log, log[-3000:]
    assert "retried 1 failed entities one by one: 0 recovered, 1 still failed" in log

    keys = {int(k.decode().split(":")[1]) for k in redis_client.scan_iter("forecast:[0-9]*")}
    assert keys == set(good)
    assert json.loads(redis_client.get(f"forecast:{good[0]}"))["as_of_date"] == AS_OF
    assert json.loads(redis_client.get("forecast:metadata:last_run")) == {"as_of_date": "2024-06-09"}
    report = _report(database, "forecast_worker")
    assert len(report) == 1 and (report["succeeded"].iloc[0], report["failed"].iloc[0]) == (2, 1)
    detail = json.loads(report["detail"].iloc[0])
    assert detail["status"] == "partial" and detail["failed_ids"] == [bad] and detail["recovered"] == 0


def test_dry_run_writes_nothing_and_says_what_would_run(dag_runner, database, redis_client, data):
    reported = len(_sql(database, "SELECT id FROM backfill_report"))
    users = sorted(data.orders["customer_id"].value_counts().index[:3].astype(int).tolist())
    out = dag_runner("backfill", {"job": "order_insights", "start_date": "2024-06-01", "end_date": AS_OF,
                                  "user_ids": users, "dry_run": True})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "backfill order_insights 2024-06-01..2024-06-02 succeeded (dry run, nothing written)" in log
    assert "'dates': 2" in log and "'dry_run': True" in log  # the report task's XCom summary
    assert list(redis_client.scan_iter("*")) == []
    assert len(_sql(database, "SELECT id FROM backfill_report")) == reported


@pytest.fixture
def affinity_users(database, data):
    """The three users with the most events; their affinity rows are removed afterwards, so later
    modules start from empty affinity tables."""
    users = sorted(data.events["user_id"].value_counts().index[:3].astype(int).tolist())
    yield users
    for table in ("user_affinity_recompute", "user_category_affinity"):  # fixed names
        _sql(database, f"DELETE FROM {table} WHERE user_id = ANY(%s)", (users,))


def test_user_affinity_features_for_some_users_leave_the_watermark(dag_runner, database, redis_client,
                                                                   affinity_users):
    from include.jobs import user_affinity

    users, before = affinity_users, user_affinity.read_watermark()
    out = dag_runner("backfill", {"job": "user_affinity", "start_date": AS_OF, "end_date": AS_OF,
                                  "user_ids": users, "features": ["affinity"]})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]

    hashes = {int(k.decode().rsplit(":", 1)[1]) for k in redis_client.scan_iter("affinity:user:*")}
    assert hashes == set(users)
    rows = dict(_sql(database, "SELECT user_id, count(*) FROM user_category_affinity WHERE user_id = ANY(%s) "
                               "GROUP BY 1", (users,)))
    assert set(rows) == set(users) and all(len(redis_client.hgetall(f"affinity:user:{u}")) == rows[u] for u in users)
    assert _sql(database, "SELECT user_id FROM user_profiles WHERE user_id = ANY(%s)", (users,)) == []
    assert user_affinity.read_watermark() == before
    report = _report(database, "user_affinity")
    assert report[["succeeded", "failed", "skipped"]].values.tolist() == [[3, 0, 0]]


@pytest.mark.parametrize("job, start", [("popularity", "2024-06-08"), ("popular_segments", "2024-06-08"),
                                        ("cf_training", AS_OF), ("faiss_rebuild", AS_OF)])
def test_whole_run_jobs_backfill_each_date_and_report_it(dag_runner, database, redis_client, data, job, start,
                                                         tmp_path, monkeypatch):
    monkeypatch.setenv("ARTIFACT_ROOT", tmp_path.as_uri())  # model versions and embedding cache of its own
    out = dag_runner("backfill", {"job": job, "start_date": start, "end_date": "2024-06-09"
                                  if job.startswith("popular") else AS_OF})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    report = _report(database, job)
    dates = 1 if job == "faiss_rebuild" or start == AS_OF else 2  # faiss_rebuild: one rebuild, no as_of
    assert report[["succeeded", "failed", "skipped"]].values.tolist() == [[1, 0, 0]] * dates
    if job == "popularity":
        assert _sql(database, 'SELECT count(*) FROM "Product" WHERE popularity_score > 0')[0][0] > 0
        assert redis_client.zcard("popular:global") > 0
    elif job == "popular_segments":
        assert _sql(database, "SELECT count(*) FROM popular_items")[0][0] > 0


_FORECAST = {"job": "forecast_worker", "start_date": AS_OF, "end_date": AS_OF}


@pytest.mark.parametrize("conf, message", [
    ({"start_date": "2024-06-09"}, "start_date 2024-06-09 is after end_date 2024-06-02; swap them"),
    ({"end_date": "2999-01-01"}, "end_date 2999-01-01 is in the future"),
    ({"start_date": "2024-01-01"}, "2024-01-01..2024-06-02 spans 154 days, more than BACKFILL_MAX_DAYS (92)"),
    ({"job": "nightly_magic"}, "Invalid input for param job"),
    ({"user_ids": [1, 2]}, "job forecast_worker takes no user_ids"),
    ({"job": "popularity", "product_ids": [1]}, "job popularity takes no product_ids"),
    ({"product_ids": [1, 2, 99999, 123456]}, "2 of the 4 product_ids do not exist in Product: [99999, 123456]"),
    ({"product_ids": list(range(1, 10_002))}, "Invalid input for param product_ids"),
    ({"start_date": "2024-13-45"}, "Invalid input for param start_date"),
    ({"job": "weekly_recs", "features": ["affinity"]}, "job weekly_recs has no features to pick"),
], ids=["start-after-end", "future-end", "span", "unknown-job", "user-ids-for-products", "ids-for-whole-job",
        "nonexistent-ids", "too-many-ids", "malformed-date", "features-of-other-job"])
def test_bad_conf_fails_with_one_message_and_writes_nothing(dag_runner, database, redis_client, data, conf, message):
    reported = len(_sql(database, "SELECT id FROM backfill_report"))
    out = dag_runner("backfill", {**_FORECAST, **conf})
    assert out.returncode != 0 and message in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    assert len(_sql(database, "SELECT id FROM backfill_report")) == reported
    assert list(redis_client.scan_iter("*")) == []

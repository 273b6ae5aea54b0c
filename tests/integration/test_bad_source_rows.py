"""Bad source rows (NULL ids, bad quantities, future dates, duplicate lines) are counted per reason,
quarantined in dead_letter and left out; every good customer and product comes out exactly as
without them, and unicode and 300-character names are processed and written as they are."""
from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.jobs import forecast_worker, order_insights, weekly_recs
from include.runtime.source_quality import REASONS

AS_OF = "2024-06-02"
WEEK = "2024-W22"
PLANTED = {"null_id": 3, "future_date": 1, "non_positive_quantity": 2, "absurd_quantity": 1, "duplicate_line": 2}


def _name(product_id: int) -> str:
    """Unicode names; every third one exactly 300 characters long."""
    name = f"Ünïcødé 商品 №{product_id} — «quoted» 'single' \"double\" ✓ 🚀"
    return (name + " ж" * 200)[:300] if product_id % 3 == 0 else name


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=150, products=40, start="2023-06-05", end="2024-06-10", seed=5)
    data.products["name"] = data.products["product_id"].map(_name)
    data.products["category"] = "Catégorie-α " + data.products["category"]
    load_source(database, data.orders, data.products, data.customers)
    return data


def _sql(database, statement: str, params=None):
    with database.conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else None
    database.conn.commit()
    return rows


def _run_recs(run_key: str) -> tuple[dict, list[dict]]:
    today = dt.date.today()
    run = weekly_recs.RecsRun.from_params({"as_of_date": AS_OF, "shard_count": 3}, None, today, run_key)
    model_dir = weekly_recs.prepare(run)["model_dir"]
    shards = weekly_recs.plan(run)
    stats = [weekly_recs.process_shard(run, d, model_dir) for d in shards]
    summary = weekly_recs.validate(run, stats)
    for descriptor in shards:
        weekly_recs.publish_shard(run, descriptor)
    return weekly_recs.finalize(run, summary, {}, None), stats


def _run_forecast(run_id: str) -> tuple[dict, list[dict]]:
    run = forecast_worker.ForecastRun.from_params({"as_of_date": AS_OF, "shard_count": 3}, None, dt.date.today(),
                                                  run_id)
    shards = forecast_worker.plan(run)
    model_dir = forecast_worker.prepare(run, shards)["model_dir"]
    stats = [forecast_worker.process_shard(run, d, f"{run_id}:{d['shard']}/{d['of']}", model_dir) for d in shards]
    summary = forecast_worker.validate(run, stats)
    published = [forecast_worker.publish(run, d) for d in shards]
    return forecast_worker.finalize(run, summary, published, None), stats


def _run_insights(run_id: str) -> tuple[dict, list[dict]]:
    run = order_insights.InsightsRun.from_params({"as_of_date": AS_OF, "shard_count": 2, "days": 60, "min_orders": 2},
                                                 None, dt.date.today(), run_id)
    shards = order_insights.plan(run)
    stats = [order_insights.process_shard(run, d["shard"], d["of"], f"{run_id}:{d['shard']}/{d['of']}") for d in shards]
    summary = order_insights.validate(run, stats)
    published = [order_insights.publish_shard(run, d["shard"], d["of"]) for d in shards]
    return order_insights.finalize(run, summary, published, None), stats


def _outputs(redis_client, database) -> tuple[dict, dict, dict, list]:
    """Every recs, forecast and insights document without its timestamps, and the backup rows."""
    recs, forecasts, insights = {}, {}, {}
    for key in redis_client.scan_iter(f"{WEEK}:*"):
        doc = json.loads(redis_client.get(key))
        doc.pop("generated_at")
        recs[key.decode()] = doc
    for key in redis_client.scan_iter("forecast:[0-9]*"):
        doc = json.loads(redis_client.get(key))
        doc["model_metadata"].pop("generated_at")
        forecasts[key.decode()] = doc
    for key in redis_client.scan_iter("recommendations:user:*"):
        doc = json.loads(redis_client.get(key))
        doc.pop("generated_at")
        insights[key.decode()] = doc
    backup = _sql(database, 'SELECT "CustomerID", "ProductID", "Rank", "Score", "Source" FROM "WeeklyRecommendation" '
                            'WHERE "Week" = %s ORDER BY 1, 3', (WEEK,))
    return recs, forecasts, insights, backup


def _plant_bad_rows(database, data) -> int:
    """Two to three lines of every kind, around one good active customer's recent order."""
    orders = data.orders
    recent = orders[(orders["order_date"] < pd.Timestamp(AS_OF)) & (orders["order_date"] > pd.Timestamp(AS_OF) - pd.Timedelta(days=20))]
    order = recent.iloc[-1]
    customer, order_id, day = int(order["customer_id"]), int(order["order_id"]), order["order_date"].to_pydatetime()
    in_order = orders[orders["order_id"] == order_id]
    others = [int(p) for p in data.products["product_id"] if p not in set(in_order["product_id"])][:3]
    product = int(in_order["product_id"].iloc[0])
    item = int(_sql(database, 'SELECT max("ID") FROM "OrderItem"')[0][0])
    new_order = int(orders["order_id"].max())
    lines = [  # (ID, OrderID, ProductID, Quantity)
        (item + 1, order_id, None, 1.0),                # null_id: no product
        (item + 2, new_order + 100, product, 1.0),      # null_id: no order (orphaned line)
        (item + 3, new_order + 1, product, 2.0),        # null_id: order of an unknown agreement (no customer)
        (item + 4, new_order + 2, product, 1.0),        # future_date
        (item + 5, order_id, others[0], -3.0),          # non_positive_quantity
        (item + 6, order_id, others[1], 0.0),           # non_positive_quantity
        (item + 7, order_id, others[2], 1e7),           # absurd_quantity
    ] + [(item + 8 + k, order_id, int(p), float(q))     # duplicate_line: the order's first two lines again
         for k, (p, q) in enumerate(in_order[["product_id", "quantity"]].head(2).itertuples(index=False))]
    with database.conn.cursor() as cur:
        cur.executemany('INSERT INTO "Order" ("ID", "ClientAgreementID", "Created") VALUES (%s, %s, %s)',
                        [(new_order + 1, 10**9, day), (new_order + 2, customer, dt.datetime(2099, 1, 1))])
        cur.executemany('INSERT INTO "OrderItem" ("ID", "OrderID", "ProductID", "Quantity", "Price") '
                        'VALUES (%s, %s, %s, %s, 1.5)', lines)
    database.conn.commit()
    return item


def test_bad_rows_are_counted_quarantined_and_left_out(database, redis_client, data, monkeypatch):
    assert sum(PLANTED.values()) == 9
    clean_recs, clean_stats = _run_recs("clean")
    clean_forecast, _ = _run_forecast("clean")
    clean_insights, _ = _run_insights("clean")
    for meta in (clean_recs, clean_forecast, clean_insights):
        assert meta["bad_source_rows"] == dict.fromkeys(REASONS, 0)
    assert all(s["bad_rows"] == 0 for s in clean_stats)
    clean = _outputs(redis_client, database)
    assert len(clean[0]) > 50 and len(clean[1]) > 20 and len(clean[2]) > 10

    first_bad = _plant_bad_rows(database, data)
    redis_client.flushdb()
    recs_meta, recs_stats = _run_recs("bad")
    forecast_meta, forecast_stats = _run_forecast("bad")
    insights_meta, insights_stats = _run_insights("bad")

    # counted per reason: in each shard's stats and the run metadata
    for meta in (recs_meta, forecast_meta, insights_meta):
        assert meta["bad_source_rows"] == PLANTED
    for stats in (recs_stats, forecast_stats, insights_stats):
        assert sum(s["bad_rows"] for s in stats) == 9
        assert all(s["bad_rows"] == sum(s[f"bad_rows_{r}"] for r in REASONS) for s in stats)
    assert json.loads(redis_client.get("recs:metadata:last_run"))["bad_source_rows"] == PLANTED

    # the rest processed exactly as without them
    assert _outputs(redis_client, database) == clean
    assert recs_meta["processed"] == clean_recs["processed"] and recs_meta["failed"] == 0
    assert forecast_meta["total_products"] == clean_forecast["total_products"]

    # quarantined: one dead letter per bad line and job, under the shard's job id
    letters = pd.DataFrame(_sql(database, "SELECT job_name, job_id, error, input FROM dead_letter "
                                          "WHERE job_id LIKE 'bad:%%:source_rows'"),
                           columns=["job_name", "job_id", "error", "input"])
    for job in ("weekly_recs", "forecast_worker", "order_insights"):
        mine = letters[letters["job_name"] == job]
        assert mine["error"].value_counts().to_dict() == {f"bad source row: {r}": n for r, n in PLANTED.items()}
        rows = [json.loads(i) for i in mine["input"]]
        assert sorted(r["item_id"] for r in rows) == list(range(first_bad + 1, first_bad + 10))
        assert {"order_id", "customer_id", "product_id", "order_date", "quantity", "price"} <= set(rows[0])
        assert set(mine["job_id"]) <= {f"bad:{k}/{n}:source_rows" for n in (2, 3) for k in range(n)}

    # a rerun with a bound of one letter per reason and shard: all still counted, letters replaced
    monkeypatch.setenv("SOURCE_QUARANTINE_MAX_ROWS", "1")
    bounded_meta, _ = _run_forecast("bad")
    assert bounded_meta["bad_source_rows"] == PLANTED
    bounded = _sql(database, "SELECT error, count(*) FROM dead_letter WHERE job_name = 'forecast_worker' "
                             "AND job_id LIKE 'bad:%%:source_rows' GROUP BY error, job_id")
    assert bounded and all(n == 1 for _, n in bounded)


def test_unicode_and_long_names_round_trip(database, redis_client, data):
    _run_recs("names")
    names = dict(_sql(database, 'SELECT "ID", "Name" FROM "Product"'))
    assert any(len(n) == 300 for n in names.values())
    categories = set(data.products["category"])
    seen = 0
    for key in redis_client.scan_iter(f"{WEEK}:*"):
        for rec in json.loads(redis_client.get(key))["recommendations"]:
            assert rec["product_name"] == names[rec["product_id"]] == _name(rec["product_id"])
            assert rec["category"] in categories
            seen += len(rec["product_name"]) == 300
    assert seen > 0, "some recommended product has a 300-character name"
    customers = {int(k.decode().split(":")[1]) for k in redis_client.scan_iter(f"{WEEK}:*")}
    backup = _sql(database, 'SELECT DISTINCT "CustomerID" FROM "WeeklyRecommendation" WHERE "Week" = %s', (WEEK,))
    assert {c for (c,) in backup} == customers

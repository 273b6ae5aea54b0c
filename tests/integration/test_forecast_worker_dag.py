"""forecast_worker under `airflow dags test` on real PostgreSQL and Redis."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate

AS_OF = "2024-06-02"
# The planted infinite quantity must reach the engine to make its product fail: under the default
# SOURCE_MAX_QUANTITY it is an absurd source row, left out and quarantined (test_bad_source_rows.py).
NO_QUANTITY_BOUND = {"SOURCE_MAX_QUANTITY": "inf"}
# The fields of a forecast:{product_id} document (DESIGN.md, Contracts).
DOCUMENT_FIELDS = {"product_id", "as_of_date", "forecast_weeks", "predictions", "summary", "model_metadata"}
WEEK_FIELDS = {"week_start", "week_end", "predicted_quantity", "confidence_lower", "confidence_upper",
               "active_customers"}
SUMMARY_FIELDS = {"total_predicted_quantity", "active_customers", "avg_weekly_quantity"}
MODEL_METADATA_FIELDS = {"model_type", "forecast_accuracy_estimate", "historical_weeks", "generated_at"}


@pytest.fixture(scope="module")
def orders(database):
    data = generate(customers=300, products=60, start="2022-06-06", end="2024-06-03", seed=11)
    load_source(database, data.orders, data.products, data.customers)
    # A product made to fail: one order line with an infinite quantity on the busiest product.
    busiest = int(data.orders.groupby("product_id")["order_id"].nunique().idxmax())
    with database.conn.cursor() as cur:
        cur.execute('INSERT INTO "OrderItem" ("ID", "OrderID", "ProductID", "Quantity", "Price") '
                    "VALUES (%s, %s, %s, 'Infinity', 1.0)",
                    (len(data.orders) + 1, int(data.orders["order_id"].iloc[-1]), busiest))
        cur.execute("DELETE FROM dead_letter")
    database.conn.commit()
    return data.orders, busiest


def _eligible(orders: pd.DataFrame) -> set[int]:
    window = orders[orders["order_date"] < pd.Timestamp(AS_OF) + pd.Timedelta(days=1)]
    stats = window.groupby("product_id").agg(customers=("customer_id", "nunique"), orders=("order_id", "nunique"))
    return set(stats[(stats["customers"] >= 2) & (stats["orders"] >= 3)].index)


def _dead_letters(database) -> list[tuple]:
    with database.conn.cursor() as cur:
        cur.execute("SELECT job_name, error, input, stack_trace FROM dead_letter ORDER BY id")
        rows = cur.fetchall()
    database.conn.commit()
    return rows


def test_tasks_stage_then_publish_after_validation():
    from airflow.models import DagBag

    from tests.conftest import ROOT

    dag = DagBag(dag_folder=str(ROOT / "dags" / "forecast_worker.py")).dags["forecast_worker"]
    upstream = {task.task_id: set(task.upstream_task_ids) for task in dag.tasks}
    assert upstream == {
        "resolve_settings": set(), "plan": {"resolve_settings"}, "prepare": {"resolve_settings", "plan"},
        "process": {"resolve_settings", "plan", "prepare"}, "validate": {"resolve_settings", "process"},
        "publish": {"resolve_settings", "plan", "validate"},
        "finalize": {"resolve_settings", "validate", "publish"},
    }


def test_forecasts_every_eligible_product(dag_runner, database, redis_client, orders):
    frame, bad = orders
    out = dag_runner("forecast_worker", {"as_of_date": AS_OF, "shard_count": 3}, env=NO_QUANTITY_BOUND)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    eligible = _eligible(frame)
    keys = {int(k.decode().split(":")[1]) for k in redis_client.scan_iter("forecast:[0-9]*")}
    meta = json.loads(redis_client.get("forecast:metadata:last_run"))
    assert meta["as_of_date"] == AS_OF
    assert meta["total_products"] == len(eligible)
    assert meta["failed"] == 1
    assert meta["successful"] + meta["no_forecast"] + meta["failed"] == len(eligible)
    assert len(keys) == meta["successful"] and keys <= eligible and bad not in keys
    assert 0 < redis_client.ttl("forecast:metadata:last_run") <= 604800

    product_ids = sorted(keys)
    pipe = redis_client.pipeline(transaction=False)  # one round trip for every key's TTL and document
    for product_id in product_ids:
        pipe.ttl(f"forecast:{product_id}")
        pipe.get(f"forecast:{product_id}")
    replies = pipe.execute()
    for product_id, ttl, raw in zip(product_ids, replies[::2], replies[1::2]):
        assert 604000 < ttl <= 604800, (product_id, ttl)
        doc = json.loads(raw)
        assert set(doc) == DOCUMENT_FIELDS, product_id
        assert doc["product_id"] == product_id and doc["as_of_date"] == AS_OF and doc["forecast_weeks"] == 12
        weeks = doc["predictions"]
        assert len(weeks) == 12 and weeks[0]["week_start"] == "2024-06-03" and weeks[0]["week_end"] == "2024-06-09"
        for week in weeks:
            assert set(week) == WEEK_FIELDS, product_id
            assert 0 <= week["confidence_lower"] <= week["predicted_quantity"] <= week["confidence_upper"]
            assert week["active_customers"] >= 0
        assert set(doc["summary"]) == SUMMARY_FIELDS, product_id
        assert doc["summary"]["total_predicted_quantity"] == pytest.approx(
            sum(w["predicted_quantity"] for w in weeks), abs=0.1)
        assert set(doc["model_metadata"]) == MODEL_METADATA_FIELDS, product_id

    letters = _dead_letters(database)
    assert len(letters) == 1 and letters[0][0] == "forecast_worker"
    assert json.loads(letters[0][2])["product_id"] == bad and "infinite" in letters[0][1]

    from scripts import dead_letters

    listed = dead_letters.main(["--job", "forecast_worker", "--json"])
    assert [json.loads(x["input"])["product_id"] for x in listed] == [bad]
    assert dead_letters.main(["--job", "weekly_recs"]) == []


def test_failure_rate_above_limit_fails_validate_and_keeps_metadata(dag_runner, redis_client, orders):
    _, bad = orders
    redis_client.set("forecast:metadata:last_run", json.dumps({"as_of_date": "previous"}))
    out = dag_runner("forecast_worker", {"as_of_date": AS_OF, "limit": 10},
                     env=NO_QUANTITY_BOUND)  # 1 failure in 10 products: 10%
    assert out.returncode != 0
    assert "failed" in out.stdout + out.stderr
    assert json.loads(redis_client.get("forecast:metadata:last_run")) == {"as_of_date": "previous"}
    assert list(redis_client.scan_iter("forecast:[0-9]*")) == []  # staged only: nothing published


def test_dry_run_writes_nothing(dag_runner, redis_client, orders):
    out = dag_runner("forecast_worker", {"as_of_date": AS_OF, "dry_run": True, "limit": 20})
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(redis_client.scan_iter("forecast:*")) == []  # job state (failure counters) may exist


@pytest.mark.parametrize("conf, message", [
    ({"as_of_date": "2999-01-01"}, "as_of_date 2999-01-01 is in the future"),
    ({"as_of_date": "2024-13-45"}, "Invalid input for param as_of_date"),
    ({"as_of_date": "yesterday"}, "Invalid input for param as_of_date"),
    ({"shard_count": 0}, "Invalid input for param shard_count"),
    ({"shard_count": 5000}, "Invalid input for param shard_count"),
    ({"limit": -1}, "Invalid input for param limit"),
    ({"dry_run": "yes"}, "Invalid input for param dry_run"),
    ({"product_ids": [0]}, "Invalid input for param product_ids"),
    ({"product_ids": []}, "Invalid input for param product_ids"),
    ({"product_ids": "7"}, "Invalid input for param product_ids"),
    ({"product_ids": list(range(1, 10_002))}, "Invalid input for param product_ids"),
], ids=["future", "bad-month", "not-a-date", "zero-shards", "too-many-shards", "negative-limit", "non-boolean",
        "zero-product-id", "no-product-ids", "product-ids-not-a-list", "too-many-product-ids"])
def test_bad_params_are_rejected_before_any_work(dag_runner, redis_client, conf, message, orders):
    out = dag_runner("forecast_worker", {"as_of_date": AS_OF, **conf})
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert list(redis_client.scan_iter("forecast:*")) == []  # job state (failure counters) may exist


def test_a_crashing_product_leaves_its_stack_trace_in_the_dead_letter(database, redis_client, orders, monkeypatch):
    import datetime as dt

    from include.jobs import forecast_worker as job
    from include.models.forecast import ForecastEngine

    run = job.ForecastRun.from_params({"as_of_date": AS_OF, "shard_count": 1, "limit": 5}, None, dt.date.today(),
                                      "crash")
    shards = job.plan(run)
    model_dir = job.prepare(run, shards)["model_dir"]

    def run_models(self, y, first, cutoffs, h):  # stands in for a model failing on odd data
        raise FloatingPointError("odd series")

    monkeypatch.setattr(ForecastEngine, "_run_models", run_models)
    stats = job.process_shard(run, shards[0], "crash:0/1", model_dir)
    assert stats["failed"] == stats["products"] == 5
    with database.conn.cursor() as cur:
        cur.execute("SELECT error, stack_trace FROM dead_letter WHERE job_id = 'crash:0/1'")
        letters = cur.fetchall()
        cur.execute("DELETE FROM dead_letter WHERE job_id = 'crash:0/1'")
    database.conn.commit()
    assert len(letters) == 5
    for error, trace in letters:
        assert "odd series" in error
        assert trace.startswith("Traceback") and "run_models" in trace and "FloatingPointError: odd series" in trace
    assert list(redis_client.scan_iter("forecast:[0-9]*")) == []  # staged, not published

"""Forecasts do not depend on how the catalogue is cut: the same as_of gives the same forecast per
product for any shard count, for a run of one product (a backfill) and for a dead-letter re-drive,
because every shard, backfill and re-drive applies the pooled state fitted over all products."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate

AS_OF = "2024-06-02"


@pytest.fixture(scope="module")
def data(database):
    data = generate(customers=300, products=90, start="2022-06-06", end="2024-06-03", seed=23)
    load_source(database, data.orders, data.products, data.customers)
    with database.conn.cursor() as cur:
        cur.execute("DELETE FROM dead_letter")
    database.conn.commit()
    return data


def _run(dag_runner, conf: dict, env: dict | None = None) -> None:
    out = dag_runner("forecast_worker", {"as_of_date": AS_OF, **conf}, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def _forecasts(redis_client) -> dict[int, dict]:
    """Every forecast document by product, without its generation time."""
    documents = {}
    for key in redis_client.scan_iter("forecast:[0-9]*"):
        document = json.loads(redis_client.get(key))
        document["model_metadata"].pop("generated_at")
        documents[int(key.split(b":")[1])] = document
    return documents


def test_forecasts_are_the_same_for_any_shard_count_and_for_one_product(dag_runner, redis_client, data):
    _run(dag_runner, {"shard_count": 1})
    whole = _forecasts(redis_client)
    metadata = redis_client.get("forecast:metadata:last_run")
    assert len(whole) > 50
    for shards in (3, 10):
        redis_client.flushdb()
        _run(dag_runner, {"shard_count": shards})
        assert _forecasts(redis_client) == whole, f"shard_count {shards}"

    product = sorted(whole)[len(whole) // 2]
    redis_client.flushdb()
    redis_client.set("forecast:metadata:last_run", metadata)
    _run(dag_runner, {"product_ids": [product]})
    assert _forecasts(redis_client) == {product: whole[product]}
    assert redis_client.get("forecast:metadata:last_run") == metadata  # a run for some products: not a whole run


def test_shards_apply_the_prepared_state_to_1e9(database, data):
    from include.jobs import forecast_worker as job
    from include.models.forecast import ForecastEngine
    from include.runtime.database import Database

    today = dt.date.today()
    runs = {n: job.ForecastRun.from_params({"as_of_date": AS_OF, "shard_count": n}, None, today, f"inproc-{n}")
            for n in (1, 10)}
    prepared = {n: job.prepare(run, job.plan(run)) for n, run in runs.items()}
    one, ten = (np.load(f"{prepared[n]['model_dir']}/forecast_state.npz", allow_pickle=False) for n in (1, 10))
    for name in one.files:
        np.testing.assert_array_equal(one[name], ten[name], err_msg=name)

    engine = ForecastEngine.load(prepared[10]["model_dir"])
    with Database("source_db") as db:
        everything = db.frame("forecast_weekly_history", runs[1].query_params(job.plan(runs[1])[0]))
        whole = _by_product(engine.forecast(job.history_panel(everything, runs[1])))
        seen = set()
        for descriptor in job.plan(runs[10]):
            weekly = db.frame("forecast_weekly_history", runs[10].query_params(descriptor))
            part = _by_product(engine.forecast(job.history_panel(weekly, runs[10])))
            np.testing.assert_allclose(part.to_numpy(float), whole.loc[part.index].to_numpy(float), rtol=0, atol=1e-9)
            seen |= set(part.index)
    assert seen == set(whole.index)


def _by_product(result) -> pd.DataFrame:
    return result.predictions.sort_values(["product_id", "week_start"]).set_index(["product_id", "week_start"])


def test_a_dead_letter_redrive_forecasts_as_a_whole_run(dag_runner, database, redis_client, data):
    _run(dag_runner, {"shard_count": 2})
    whole = _forecasts(redis_client)
    product = max(whole)
    with database.conn.cursor() as cur:  # a line no forecast can use makes the product fail once
        cur.execute('SELECT max("ID"), max("OrderID") FROM "OrderItem"')
        line, order = cur.fetchone()
        cur.execute('INSERT INTO "OrderItem" ("ID", "OrderID", "ProductID", "Quantity", "Price") '
                    "VALUES (%s, %s, %s, 'Infinity', 1.0)", (line + 1, order, product))
    database.conn.commit()
    _run(dag_runner, {"shard_count": 2}, env={"SOURCE_MAX_QUANTITY": "inf"})
    with database.conn.cursor() as cur:
        cur.execute("SELECT input FROM dead_letter WHERE job_name = 'forecast_worker' ORDER BY id")
        letters = [json.loads(row[0]) for row in cur.fetchall()]
        cur.execute('DELETE FROM "OrderItem" WHERE "ID" = %s', (line + 1,))  # the source row is fixed
    database.conn.commit()
    assert [letter["product_id"] for letter in letters] == [product]

    redis_client.delete(f"forecast:{product}")
    _run(dag_runner, {"as_of_date": letters[0]["as_of"], "product_ids": [product]})  # what a re-drive triggers
    assert _forecasts(redis_client)[product] == whole[product]

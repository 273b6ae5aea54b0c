"""Forecast worker: 12-week demand forecasts for every forecastable product.

plan -> prepare -> process (one per shard) -> validate -> publish (one per shard) -> finalize, as
in DESIGN.md. `prepare` fits the engine's pooled state once over every eligible product, so a
product's forecast is the same whatever the shard count, and in a run for a few `product_ids` (a
backfill or a dead-letter re-drive). Each shard reads its products' weekly history in one query,
forecasts them with that state and stages their documents; failed products go to the dead-letter
table. Only after validation does `publish` write the staged keys, and `finalize` the metadata.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from include.jobs import publication
from include.jobs.run_params import RunSettings, as_of_date, entity_ids, int_param
from include.jobs.sharding import failure_gate, shard_plan, total
from include.runtime import artifacts, config, dead_letters, metrics, source_quality, staging
from include.runtime.config import RESULTS_CONN_ID, SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.progress import Progress, log_summary

log = logging.getLogger(__name__)

JOB = "forecast_worker"


@dataclass(frozen=True)
class ForecastRun(RunSettings):
    """A run's settings: DAG params over Variables/environment over the seed's defaults."""

    as_of: dt.date
    start: dt.date
    min_customers: int
    min_orders: int
    cache_ttl: int
    shard_count: int
    limit: int | None
    dry_run: bool
    horizon: int
    max_failure_rate: float
    run_key: str
    product_ids: list[int] | None = None
    IDS = "product_ids"

    @classmethod
    def from_params(cls, params: dict[str, Any], run_date: dt.date, today: dt.date, run_key: str) -> "ForecastRun":
        """Resolve and check what JSON schema cannot: a real date that is not in the future."""
        ids = params.get("product_ids")
        return cls(as_of=as_of_date(params.get("as_of_date"), run_date, today),
                   start=dt.date.fromisoformat(config.get("FORECAST_HISTORY_START")),
                   min_customers=int_param(params, "min_customers", "FORECAST_MIN_CUSTOMERS"),
                   min_orders=int_param(params, "min_orders", "FORECAST_MIN_ORDERS"),
                   cache_ttl=int_param(params, "cache_ttl", "FORECAST_CACHE_TTL"),
                   shard_count=int_param(params, "shard_count", "FORECAST_WORKERS"),
                   limit=params.get("limit"), dry_run=bool(params.get("dry_run", False)),
                   horizon=config.get_int("FORECAST_WEEKS"),
                   max_failure_rate=config.get_float("FORECAST_MAX_FAILURE_RATE"), run_key=run_key,
                   product_ids=entity_ids(ids))

    def query_params(self, shard: dict[str, int] | None = None) -> dict[str, Any]:
        """Bound parameters of the forecast queries; `shard` is a descriptor from `plan`."""
        return {"start": dt.datetime.combine(self.start, dt.time()),
                "until": dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time()),
                "min_customers": self.min_customers, "min_orders": self.min_orders,
                **source_quality.rule_params(), **(shard or {})}



def plan(run: ForecastRun) -> list[dict[str, int]]:
    """Find the forecastable products; one descriptor per shard. A `limit` keeps the products
    with the most orders: the descriptors carry the last one kept as (cutoff_orders, cutoff_product).
    A run for `product_ids` keeps only the shards holding one of them."""
    with Database(SOURCE_CONN_ID) as db:
        eligible = db.frame("forecast_products", run.query_params())
    if run.limit is not None:
        eligible = eligible.iloc[:run.limit]
    cutoff = ({"cutoff_orders": int(eligible["orders"].iloc[-1]), "cutoff_product": int(eligible["product_id"].iloc[-1])}
              if run.limit is not None and len(eligible) else {"cutoff_orders": 0, "cutoff_product": 0})
    shards = run.shards_to_run([{**s, **cutoff} for s in shard_plan(len(eligible), run.shard_count)])
    log.info("as_of %s: %d forecastable products, %d shards to run", run.as_of, len(eligible), len(shards))
    return shards


def history_panel(weekly, run: ForecastRun):
    """The engine's panel of forecast_weekly_history rows, on the run's weeks (FORECAST_HISTORY_START
    to as_of) whatever products they hold, so every shard's panel lines up with the fitted state."""
    from include.models.forecast import panel_from_weekly

    categories = weekly.groupby("product_id")["category"].first()
    return panel_from_weekly(weekly, run.as_of, start=run.start, categories=categories)


def prepare(run: ForecastRun, shards: list[dict[str, int]]) -> dict[str, Any]:
    """Fit the engine's pooled state over every eligible product (all shards, whatever the run's
    `product_ids`) and save it in the run's artifact directory for the shards."""
    from include.models.forecast import ForecastEngine

    started = time.monotonic()
    everything = {**(shards[0] if shards else {"cutoff_orders": 0, "cutoff_product": 0}), "shard": 0, "of": 1}
    with Database(SOURCE_CONN_ID) as db:
        weekly = db.frame("forecast_weekly_history", run.query_params(everything))
    loaded = time.monotonic()
    panel = history_panel(weekly, run)
    engine = ForecastEngine(horizon=run.horizon).fit(panel)
    directory = artifacts.run_directory(JOB, run.run_key)
    engine.save(directory)
    info = {"model_dir": str(directory), "products": len(panel.product_ids), "weeks": len(panel.week_starts),
            "pooled_strength": engine.strength_, "load_seconds": round(loaded - started, 2),
            "fit_seconds": round(time.monotonic() - loaded, 2)}
    log_summary("forecast pooled state prepared", info)
    return info


def forecast_documents(result, as_of: dt.date, generated_at: str) -> list[tuple[int, str]]:
    """(product_id, JSON) of every successful product, in the seed's forecast format."""
    predictions = result.predictions.sort_values(["product_id", "week_start"])
    meta = result.products.set_index("product_id")
    documents = []
    for product_id, weeks in predictions.groupby("product_id", sort=False):
        info = meta.loc[product_id]
        quantity = weeks["predicted_quantity"].to_numpy()
        customers = weeks["active_customers"].to_numpy()
        accuracy = info["forecast_accuracy_estimate"]
        documents.append((int(product_id), json.dumps({
            "product_id": int(product_id),
            "as_of_date": as_of.isoformat(),
            "forecast_weeks": len(weeks),
            "predictions": [
                {"week_start": ws.date().isoformat(), "week_end": we.date().isoformat(),
                 "predicted_quantity": round(float(q), 2), "confidence_lower": round(float(lo), 2),
                 "confidence_upper": round(float(hi), 2), "active_customers": int(round(c))}
                for ws, we, q, lo, hi, c in zip(weeks["week_start"], weeks["week_end"], quantity,
                                                weeks["confidence_lower"], weeks["confidence_upper"], customers)],
            "summary": {"total_predicted_quantity": round(float(quantity.sum()), 2),
                        "active_customers": int(round(customers.mean())),
                        "avg_weekly_quantity": round(float(quantity.mean()), 2)},
            "model_metadata": {"model_type": info["model_type"],
                               "forecast_accuracy_estimate": None if accuracy != accuracy else round(float(accuracy), 4),
                               "historical_weeks": int(info["historical_weeks"]),
                               "generated_at": generated_at},
        })))
    return documents


def process_shard(run: ForecastRun, descriptor: dict[str, int], job_id: str, model_dir: str,
                  chunk_size: int = 2000) -> dict[str, Any]:
    """Forecast one shard's products (only the run's `product_ids` when it has them) with the
    prepared pooled state; stage their documents for `publish`, record dead letters; small stats back.
    Writes no key a reader uses."""
    import pandas as pd

    from include.models.forecast import ForecastEngine

    shard, of = descriptor["shard"], descriptor["of"]
    started = time.monotonic()
    params = run.query_params(descriptor)
    with Database(SOURCE_CONN_ID) as db:
        weekly = db.frame("forecast_weekly_history", params)
    bad_rows = source_quality.quarantine(JOB, job_id, shard, params["start"], params["until"], run.dry_run)
    if run.product_ids is not None:
        weekly = weekly[weekly["product_id"].isin(run.requested(shard, of))]
    product_ids = weekly["product_id"].unique()
    log.info("shard %d/%d: %d products, %d product-weeks loaded in %.1fs",
             shard + 1, of, len(product_ids), len(weekly), time.monotonic() - started)

    engine = ForecastEngine.load(model_dir)
    progress = Progress(f"shard {shard + 1}/{of} products", len(product_ids), every=chunk_size)
    generated_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    key = config.get("FORECAST_KEY")
    documents, products = [], []
    for begin in range(0, len(product_ids), chunk_size):
        chunk = weekly[weekly["product_id"].isin(product_ids[begin:begin + chunk_size])]
        result = engine.forecast(history_panel(chunk, run))
        documents += [(key.format(product_id=p), doc) for p, doc in forecast_documents(result, run.as_of, generated_at)]
        products.append(result.products)
        failed = int((result.products["status"] == "error").sum())
        progress.update(succeeded=len(result.products) - failed, failed=failed)
    products = pd.concat(products) if products else pd.DataFrame(columns=["product_id", "status", "error",
                                                                          "stack_trace", "forecast_accuracy_estimate"])
    staged = 0 if run.dry_run else publication.stage_documents(JOB, run.run_key, shard, of, documents)

    failed = products[products["status"] == "error"]
    if len(failed) and not run.dry_run:
        letters = pd.DataFrame({"error": failed["error"].fillna("unknown error").to_numpy(),
                                "stack_trace": failed["stack_trace"].to_numpy(),
                                "input": [{"product_id": int(p), "as_of": run.as_of.isoformat(), "shard": shard,
                                           "of": of} for p in failed["product_id"]]})
        with Database(RESULTS_CONN_ID) as results:
            dead_letters.record(results, JOB, job_id, letters)
    status = products["status"]
    accuracies = products.loc[status == "success", "forecast_accuracy_estimate"].dropna()
    stats = {"shard": shard, "of": of, "products": int(len(products)),
             "successful": int((status == "success").sum()), "failed": int((status == "error").sum()),
             "no_forecast": int((status == "no_forecast").sum()), "documents_staged": staged, **bad_rows,
             "accuracy_sum": float(accuracies.sum()), "accuracy_count": int(len(accuracies)),
             "seconds": round(time.monotonic() - started, 3)}
    log_summary(f"forecast shard {shard + 1}/{of} done", stats)
    return stats


def validate(run: ForecastRun, stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the shards; fail the run (no metadata published) above the failure-rate limit."""
    from airflow.sdk.exceptions import AirflowFailException

    summary = total(stats)
    rate, passed = failure_gate(JOB, summary, "products", run.max_failure_rate)
    log_summary("forecast validation", summary)
    if not passed:
        raise AirflowFailException(
            f"{summary['failed']} of {summary['products']} products failed ({rate:.1%} > {run.max_failure_rate:.0%}); "
            "the previous forecast metadata stays in place. See the dead_letter table for the errors.")
    return summary


def publish(run: ForecastRun, descriptor: dict[str, int]) -> dict[str, Any]:
    """Write one shard's staged forecast keys (after validation passed). A requested product that
    got no forecast this time loses its old key. Nothing on a dry run."""
    key = config.get("FORECAST_KEY")
    return publication.publish_documents(JOB, run, descriptor["shard"], descriptor["of"], run.cache_ttl,
                                         lambda product_id: key.format(product_id=product_id))


def finalize(run: ForecastRun, summary: dict[str, Any], published: list[dict[str, Any]],
             started_at: dt.datetime | None) -> dict[str, Any]:
    """Write forecast:metadata:last_run (a whole run, never over a newer as_of) and the run's
    metrics; discard the staged documents."""
    now = dt.datetime.now(dt.timezone.utc)
    elapsed = (now - started_at).total_seconds() if started_at else summary.get("seconds", 0.0)
    accuracy = summary.get("accuracy_sum", 0.0) / summary["accuracy_count"] if summary.get("accuracy_count") else None
    metadata = {"last_run": now.isoformat(timespec="seconds"), "as_of_date": run.as_of.isoformat(),
                "total_products": summary.get("products", 0), "successful": summary.get("successful", 0),
                "failed": summary.get("failed", 0), "no_forecast": summary.get("no_forecast", 0),
                "elapsed_seconds": round(elapsed, 1),
                "forecast_accuracy_estimate": None if accuracy is None else round(accuracy, 4),
                "keys_written": sum(p.get("keys_written", 0) for p in published),
                "keys_removed": sum(p.get("keys_removed", 0) for p in published),
                "bad_source_rows": source_quality.run_counts(summary), "dry_run": run.dry_run}
    publication.write_metadata(run, config.get("FORECAST_METADATA_KEY"), metadata, run.cache_ttl)
    staging.discard(JOB, run.run_key)
    if accuracy is not None:
        metrics.quality(JOB, "forecast_accuracy_estimate", accuracy)
    metrics.job_run(JOB, "success", elapsed, summary.get("products", 0))
    log_summary("forecast run published" if not run.dry_run else "forecast dry run (nothing written)", metadata)
    return metadata

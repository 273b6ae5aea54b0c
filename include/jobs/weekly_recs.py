"""Weekly recommendations: top-n products per active customer, in Redis and WeeklyRecommendation.

plan -> prepare -> process (one per shard) -> validate -> publish, as in DESIGN.md. `prepare`
fits the recommender's global state once (co-purchases, popularity, trends) into a run-scoped
artifact directory; each shard loads it, reads its customers' history one query per 5,000
customers, scores them 2,000 at a time, writes `{week}:{customer_id}` through pipelined SETs and
replaces its backup rows in one transaction. `publish` flips `recs:current_week` only after validation.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from include.jobs.run_params import RunSettings, as_of_date, int_param
from include.jobs.sharding import failure_rate, shard_plan, total
from include.runtime import artifacts, config, metrics, source_quality
from include.runtime.bulk_writer import BulkWriter
from include.runtime.config import RESULTS_CONN_ID, SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.progress import Progress, log_summary
from include.runtime.redis_cache import RedisCache

log = logging.getLogger(__name__)

JOB = "weekly_recs"
_NO_LIMIT = 2**62


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True)
class RecsRun(RunSettings):
    """A run's settings: DAG params over Variables/environment over the seed's defaults."""

    as_of: dt.date
    week: str
    top_n: int
    shard_count: int
    limit: int | None
    dry_run: bool
    active_days: int
    history_days: int
    ttl: int
    run_key: str

    @classmethod
    def from_params(cls, params: dict[str, Any], run_date: dt.date, today: dt.date, run_key: str) -> "RecsRun":
        from airflow.sdk.exceptions import AirflowFailException

        as_of = as_of_date(params.get("as_of_date"), run_date, today)
        week = params.get("week") or iso_week(as_of)
        try:
            dt.date.fromisoformat(f"{week}-1")
        except ValueError:
            raise AirflowFailException(f"week must be an ISO week like 2025-W46, got {week!r}") from None
        return cls(as_of=as_of, week=week, top_n=int_param(params, "top_n", "RECS_TOP_N"),
                   shard_count=int_param(params, "shard_count", "RECS_WORKERS"), limit=params.get("limit"),
                   dry_run=bool(params.get("dry_run", False)), active_days=config.get_int("RECS_ACTIVE_DAYS"),
                   history_days=config.get_int("RECS_HISTORY_DAYS"), ttl=config.get_int("RECS_TTL"), run_key=run_key)

    @property
    def until(self) -> dt.datetime:
        return dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time())

    def query_params(self, shard: dict[str, int] | None = None) -> dict[str, Any]:
        return {"since": self.until - dt.timedelta(days=self.active_days), "until": self.until,
                "history_start": self.until - dt.timedelta(days=self.history_days), **source_quality.rule_params(),
                **(shard or {"shard": 0, "of": 1, "max_customer": _NO_LIMIT})}


def plan(run: RecsRun) -> list[dict[str, int]]:
    """Count the active customers; one descriptor per shard (a limit keeps the lowest IDs)."""
    with Database(SOURCE_CONN_ID) as db:
        active = db.frame("active_customers", run.query_params())
    if run.limit is not None:
        active = active.iloc[:run.limit]
    max_customer = int(active["customer_id"].iloc[-1]) if run.limit is not None and len(active) else _NO_LIMIT
    shards = [{**s, "max_customer": max_customer} for s in shard_plan(len(active), run.shard_count)]
    log.info("as_of %s (%s): %d active customers in %d shards", run.as_of, run.week, len(active), len(shards))
    return shards


def _orders(frame):
    """Order lines in the model's dtypes, whatever the driver returned, without duplicate lines
    (the same product again in an order: the lowest line id stays, as source_quality counts them)."""
    import pandas as pd

    frame = frame.sort_values("line_id", kind="stable") if len(frame) else frame
    frame = frame.drop_duplicates(["order_id", "product_id"]).sort_index()
    dtypes = {"customer_id": "int64", "product_id": "int64", "order_id": "int64", "quantity": "float64"}
    return frame.drop(columns="line_id").astype({c: t for c, t in dtypes.items() if c in frame}).assign(
        order_date=lambda f: pd.to_datetime(f["order_date"]))


def _promoted_item_factors():
    """(item_factors, item_ids, version) of the promoted cf_training model; Nones when there is none
    or it is damaged (a warning: the recommender goes on without ALS)."""
    from include.runtime.model_loaders import ArtifactError, load_als

    try:
        model = load_als()
    except LookupError:
        log.info("no promoted ALS model: recommending without item factors")
        return None, None, None
    except ArtifactError as exc:
        log.warning("promoted ALS model unusable, recommending without item factors: %s", exc)
        return None, None, None
    return model.item_factors, model.item_ids, model.version


def prepare(run: RecsRun) -> dict[str, Any]:
    """Fit the recommender's global state from all orders; save it for the shards."""
    import pandas as pd

    from include.models.recommender import HybridRecommender

    started = time.monotonic()
    with Database(SOURCE_CONN_ID) as db:
        orders = _orders(db.bulk_frame("recs_training_orders", run.query_params()))
        catalogue = db.frame("catalogue", {"until": run.until})
    catalogue["created_at"] = pd.to_datetime(catalogue["created_at"])
    catalogue["description"] = ""
    loaded = time.monotonic()
    item_factors, factor_item_ids, als_version = _promoted_item_factors()
    model = HybridRecommender(top_n=run.top_n).fit(orders, catalogue, run.as_of, item_factors=item_factors,
                                                   factor_item_ids=factor_item_ids)
    directory = artifacts.run_directory(JOB, run.run_key)
    model.save(directory)
    info = {"model_dir": str(directory), "order_lines": len(orders), "products": len(catalogue),
            "als_version": als_version,
            "load_seconds": round(loaded - started, 2), "fit_seconds": round(time.monotonic() - loaded, 2)}
    log_summary("recommender state prepared", info)
    return info


def recommendation_documents(recs, week: str, generated_at: str) -> list[tuple[int, str]]:
    """(customer_id, JSON) in the seed's format, one per customer of `recs` (sorted by customer, rank)."""
    import numpy as np

    last = recs["last_purchased"]
    columns = {
        "product_id": recs["product_id"].astype("int64").tolist(),
        "product_name": recs["product_name"].astype(str).tolist(),
        "score": recs["score"].round(4).tolist(),
        "source": recs["source"].tolist(),
        "category": recs["category"].astype(str).tolist(),
        "predicted_quantity": [None if q != q else round(q, 1) for q in recs["predicted_quantity"].tolist()],
        "last_purchased": [None if pd_na else d for pd_na, d in
                           zip(last.isna().tolist(), last.dt.strftime("%Y-%m-%d").tolist())],
        "purchase_frequency_days": [None if f != f else round(f, 1) for f in recs["purchase_frequency_days"].tolist()],
        "rank": recs["rank"].astype(int).tolist(),
    }
    names = list(columns)
    rows = [dict(zip(names, values)) for values in zip(*columns.values())]
    customers = recs["customer_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, customers[1:] != customers[:-1], True])
    return [(int(customers[a]), json.dumps({"customer_id": int(customers[a]), "week": week,
                                            "generated_at": generated_at, "recommendations": rows[a:b]}))
            for a, b in zip(bounds[:-1], bounds[1:])]


def process_shard(run: RecsRun, descriptor: dict[str, int], model_dir: str, batch_size: int = 2000,
                  read_size: int = 5_000, only_customers: list[int] | None = None) -> dict[str, Any]:
    """Score one shard's active customers; write Redis keys and the shard's backup rows.
    The history is read `read_size` customers at a time and scored `batch_size` at a time, so a
    shard's memory stays the same however many customers it has; its backup rows are replaced in
    one transaction all the same. `only_customers` (a backfill) keeps only those customers and
    replaces only their rows."""
    import numpy as np

    from include.models.recommender import HybridRecommender

    shard, of = descriptor["shard"], descriptor["of"]
    started = time.monotonic()
    window = run.query_params(descriptor)
    source, cache = Database(SOURCE_CONN_ID), RedisCache(chunk_size=config.get_int("REDIS_CHUNK_SIZE"))
    totals = {"customers": 0, "recommendations": 0, "discovery_recommendations": 0, "keys_written": 0,
              "backup_rows": 0, "order_lines": 0}
    score_min, score_max = 1.0, 0.0
    try:
        active = source.frame("active_customers", window)["customer_id"].to_numpy()
        if only_customers is not None:
            active = active[np.isin(active, only_customers)]
        log.info("shard %d/%d: %d active customers", shard + 1, of, len(active))
        bad_rows = source_quality.quarantine(JOB, f"{run.run_key}:{shard}/{of}", shard, window["history_start"],
                                             window["until"], run.dry_run)
        model = HybridRecommender.load(model_dir)
        generated_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        progress = Progress(f"shard {shard + 1}/{of} customers", len(active), every=batch_size)
        key = config.get("RECS_KEY")
        with _backup_rows(run, shard, of, only_customers) as load:
            for history in _history_parts(source, window, active, read_size):
                customer_ids = history["customer_id"].unique()
                totals["customers"] += len(customer_ids)
                totals["order_lines"] += len(history)
                for first in range(0, len(customer_ids), batch_size):
                    batch = customer_ids[first:first + batch_size]
                    recs = model.recommend(history[history["customer_id"].isin(batch)], batch, run.as_of)
                    if len(recs):
                        score_min = min(score_min, float(recs["score"].min()))
                        score_max = max(score_max, float(recs["score"].max()))
                    if not run.dry_run:
                        documents = recommendation_documents(recs, run.week, generated_at)
                        totals["keys_written"] += cache.set_many(
                            ((key.format(week=run.week, customer_id=c), d) for c, d in documents), run.ttl)
                        totals["backup_rows"] += load(_backup_frame(recs, run.week, generated_at))
                    totals["recommendations"] += len(recs)
                    totals["discovery_recommendations"] += int((recs["source"] == "discovery").sum())
                    served = recs.groupby("customer_id").size()
                    complete = int((served >= min(run.top_n, len(model.item_ids_))).sum())
                    progress.update(succeeded=complete, failed=len(batch) - complete)
    finally:
        cache.close()
        source.close()

    scored = totals["recommendations"] > 0
    stats = {"shard": shard, "of": of, **totals, "successful": progress.succeeded, "failed": progress.failed,
             **bad_rows, "score_min": round(score_min, 6) if scored else None,
             "score_max": round(score_max, 6) if scored else None,
             "seconds": round(time.monotonic() - started, 3)}
    log_summary(f"weekly_recs shard {shard + 1}/{of} done", stats)
    return stats


def _history_parts(source: Database, window: dict[str, Any], active, read_size: int):
    """The order lines of the `active` customers (sorted IDs of one shard), `read_size` customers
    per query; customers of the shard between them but not in `active` (a backfill) are left out."""
    for begin in range(0, len(active), read_size):
        part = active[begin:begin + read_size]
        history = _orders(source.bulk_frame("recs_shard_history", {
            **window, "first_customer": int(part[0]), "last_customer": int(part[-1])}))
        yield history[history["customer_id"].isin(part)]


@contextlib.contextmanager
def _backup_rows(run: RecsRun, shard: int, of: int, only_customers: list[int] | None):
    """The transaction that replaces the shard's WeeklyRecommendation rows of the week (or only
    those of `only_customers`); yields a function taking the rows as they come. Nothing on a dry run."""
    if run.dry_run:
        yield len
        return
    if only_customers is None:
        delete, params = "delete_weekly_recommendations", {"week": run.week, "shard": shard, "of": of}
    else:
        delete = "delete_weekly_recommendations_customer"
        params = [{"week": run.week, "customer_id": int(c)} for c in only_customers if c % of == shard]
    with Database(RESULTS_CONN_ID) as results, BulkWriter(results).replacing("WeeklyRecommendation", delete,
                                                                             params) as load:
        yield load


def _backup_frame(recs, week: str, generated_at: str):
    import pandas as pd

    return pd.DataFrame({"CustomerID": recs["customer_id"].astype("int64"), "Week": week,
                         "ProductID": recs["product_id"].astype("int64"), "Rank": recs["rank"].astype("int16"),
                         "Score": recs["score"].astype(float), "Source": recs["source"],
                         "GeneratedAt": pd.Timestamp(generated_at).tz_convert(None)})


def feedback(run: RecsRun) -> dict[str, Any]:
    """How last week's recommendations did against the orders placed since they were made."""
    previous = iso_week(run.as_of - dt.timedelta(days=7))
    params = {"week": previous, "since": run.until - dt.timedelta(days=7), "until": run.until}
    with Database(RESULTS_CONN_ID) as db:
        row = db.frame("recs_feedback", params).iloc[0]
    ordered = int(row["customers_ordered"])
    result = {"week": previous, "customers_recommended": int(row["customers_recommended"]),
              "customers_ordered": ordered,
              "hit_rate": round(int(row["customers_hit"]) / ordered, 4) if ordered else None,
              "recall@25": round(int(row["products_hit"]) / int(row["products_bought"]), 4)
              if int(row["products_bought"]) else None}
    log_summary("feedback on last week's recommendations", result)
    return result


def validate(run: RecsRun, stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Coverage, score range and failure rate; a failing check keeps the previous week live."""
    from airflow.sdk.exceptions import AirflowFailException

    summary = total(stats)
    scores = [s for s in stats if s.get("score_min") is not None]
    summary["score_min"] = min((s["score_min"] for s in scores), default=None)
    summary["score_max"] = max((s["score_max"] for s in scores), default=None)
    customers = summary.get("customers", 0)
    summary["coverage"] = round(summary.get("successful", 0) / customers, 4) if customers else 0.0
    summary["failure_rate"] = round(failure_rate(summary.get("failed", 0), customers), 4)
    checks = {
        "coverage": summary["coverage"] >= config.get_float("RECS_MIN_COVERAGE"),
        "failure_rate": summary["failure_rate"] <= config.get_float("RECS_MAX_FAILURE_RATE"),
        "score_range": not scores or (0.0 <= summary["score_min"] and summary["score_max"] <= 1.0),
    }
    for name, passed in checks.items():
        metrics.check(JOB, name, passed)
    metrics.quality(JOB, "coverage", summary["coverage"])
    log_summary("weekly_recs validation", {**summary, **{f"check_{k}": v for k, v in checks.items()}})
    failed = [name for name, passed in checks.items() if not passed]
    if failed:
        metrics.job_run(JOB, "failed", 0.0, customers)
        raise AirflowFailException(
            f"validation failed ({', '.join(failed)}): coverage {summary['coverage']:.1%}, failure rate "
            f"{summary['failure_rate']:.1%}, scores [{summary['score_min']}, {summary['score_max']}]; "
            f"recs:current_week still points at the previous week")
    return summary


def publish(run: RecsRun, summary: dict[str, Any], last_week: dict[str, Any], started_at: dt.datetime | None) -> dict[str, Any]:
    """Flip recs:current_week to this week and write the run summary, unless dry_run."""
    now = dt.datetime.now(dt.timezone.utc)
    duration = (now - started_at).total_seconds() if started_at else summary.get("seconds", 0.0)
    metadata = {"week": run.week, "as_of_date": run.as_of.isoformat(), "completed_at": now.isoformat(timespec="seconds"),
                "processed": summary.get("customers", 0), "successful": summary.get("successful", 0),
                "failed": summary.get("failed", 0), "total_recommendations": summary.get("recommendations", 0),
                "discovery_recommendations": summary.get("discovery_recommendations", 0),
                "duration_seconds": round(duration, 1),
                "rate_per_second": round(summary.get("customers", 0) / duration, 1) if duration else None,
                "coverage": summary.get("coverage"), "last_week": last_week,
                "bad_source_rows": source_quality.run_counts(summary), "dry_run": run.dry_run}
    if not run.dry_run:
        cache = RedisCache()
        try:
            cache.client.set(config.get("RECS_POINTER_KEY"), run.week)
            cache.set_json(config.get("RECS_METADATA_KEY"), metadata, ttl=run.ttl)
        finally:
            cache.close()
    for name in ("hit_rate", "recall@25"):
        if last_week.get(name) is not None:
            metrics.quality(JOB, f"last_week_{name.replace('@', '_at_')}", last_week[name])
    metrics.job_run(JOB, "success", duration, summary.get("customers", 0))
    log_summary("weekly_recs published" if not run.dry_run else "weekly_recs dry run (nothing written)", metadata)
    return metadata

"""Weekly recommendations: top-n products per active customer, in Redis and WeeklyRecommendation.

plan -> prepare -> process (one per shard) -> validate -> publish (one per shard) -> finalize, as
in DESIGN.md. `prepare` fits the recommender's global state once (co-purchases, popularity,
trends) into a run-scoped artifact directory; each shard loads it, reads its customers' history
one query per 5,000 customers, scores them 2,000 at a time and stages its rows
(include/runtime/staging.py). Only after `validate` passed does each `publish` write its shard's
`{week}:{customer_id}` keys through pipelined SETs and replace its backup rows; `finalize` then
flips `recs:current_week` and writes the run metadata. A run that fails validation changes
nothing a reader sees.
"""
from __future__ import annotations

import datetime as dt
import contextlib
import json
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

from include.jobs.publication import not_older
from include.jobs.run_params import RunSettings, as_of_date, entity_ids, int_param
from include.jobs.sharding import failure_rate, shard_plan, total
from include.runtime import artifacts, config, dead_letters, metrics, source_quality, staging
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
    user_ids: list[int] | None = None  # only these customers (a backfill, a re-drive)
    IDS = "user_ids"

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
                   history_days=config.get_int("RECS_HISTORY_DAYS"), ttl=config.get_int("RECS_TTL"), run_key=run_key,
                   user_ids=entity_ids(params.get("user_ids")))

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
    shards = run.shards_to_run([{**s, "max_customer": max_customer} for s in shard_plan(len(active), run.shard_count)])
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


def backup_rows(recs, week: str, generated_at: dt.datetime):
    """The recommender's output as WeeklyRecommendation rows: every field of the document, so the
    table alone rebuilds a key (restore); `ExpiresAt` is set when publish writes the keys."""
    import pandas as pd

    last = pd.to_datetime(recs["last_purchased"])
    return pd.DataFrame({
        "CustomerID": recs["customer_id"].astype("int64"), "Week": week,
        "ProductID": recs["product_id"].astype("int64"), "Rank": recs["rank"].astype("int16"),
        "Score": recs["score"].astype(float), "Source": recs["source"].astype(str),
        "GeneratedAt": pd.Timestamp(generated_at).tz_convert(None).floor("s"),
        "ProductName": recs["product_name"].astype(str), "Category": recs["category"].astype(str),
        "PredictedQuantity": recs["predicted_quantity"].astype(float),
        "LastPurchased": last.dt.normalize().astype("datetime64[s]"),
        "PurchaseFrequencyDays": recs["purchase_frequency_days"].astype(float),
    }).reset_index(drop=True)


def recommendation_documents(rows) -> list[tuple[int, str]]:
    """(customer_id, JSON) in the seed's format from WeeklyRecommendation rows sorted by customer
    and rank: the one builder of publish and restore, so a restored key equals the published one."""
    import numpy as np
    import pandas as pd

    if rows.empty:
        return []

    def optional(values, digits):
        return [None if v != v else round(v, digits) for v in values.astype(float).tolist()]

    last = pd.to_datetime(rows["LastPurchased"])
    columns = {
        "product_id": rows["ProductID"].astype("int64").tolist(),
        "product_name": rows["ProductName"].astype(str).tolist(),
        "score": rows["Score"].astype(float).round(4).tolist(),
        "source": rows["Source"].astype(str).tolist(),
        "category": rows["Category"].astype(str).tolist(),
        "predicted_quantity": optional(rows["PredictedQuantity"], 1),
        "last_purchased": [None if missing else d for missing, d in
                           zip(last.isna().tolist(), last.dt.strftime("%Y-%m-%d").tolist())],
        "purchase_frequency_days": optional(rows["PurchaseFrequencyDays"], 1),
        "rank": rows["Rank"].astype(int).tolist(),
    }
    names = list(columns)
    items = [dict(zip(names, values)) for values in zip(*columns.values())]
    customers = rows["CustomerID"].to_numpy()
    weeks = rows["Week"].astype(str).tolist()
    generated = pd.to_datetime(rows["GeneratedAt"]).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").tolist()
    bounds = np.flatnonzero(np.r_[True, customers[1:] != customers[:-1], True])
    return [(int(customers[a]), json.dumps({"customer_id": int(customers[a]), "week": weeks[a],
                                            "generated_at": generated[a], "recommendations": items[a:b]}))
            for a, b in zip(bounds[:-1], bounds[1:])]


def _recommend_isolated(model, history, customers, as_of, failures: list[dict[str, Any]]):
    """The model's recommendations for `customers`; when scoring raises, the batch is split in halves
    until the customers that raise are alone: they go to `failures` with error and stack trace,
    the others are scored."""
    import pandas as pd

    try:
        return model.recommend(history[history["customer_id"].isin(customers)], customers, as_of)
    except MemoryError:
        raise  # the worker's fault, not a customer's: Airflow retries the shard
    except Exception as exc:  # noqa: BLE001 - one customer's failure must not fail the shard
        if len(customers) == 1:
            failures.append({"customer_id": int(customers[0]), "error": f"{type(exc).__name__}: {exc}",
                             "stack_trace": "".join(traceback.format_exception(exc))})
            return None
        mid = len(customers) // 2
        parts = [_recommend_isolated(model, history, half, as_of, failures)
                 for half in (customers[:mid], customers[mid:])]
        parts = [p for p in parts if p is not None]
        return pd.concat(parts, ignore_index=True) if parts else None


def process_shard(run: RecsRun, descriptor: dict[str, int], model_dir: str, batch_size: int = 2000,
                  read_size: int = 5_000) -> dict[str, Any]:
    """Score one shard's active customers and stage their rows for `publish`; nothing a reader
    uses changes here. The history is read `read_size` customers at a time and scored
    `batch_size` at a time, so a shard's memory stays the same however many customers it has.
    Every active customer counts: one whose scoring raises, or who gets fewer than top_n
    recommendations, is failed and goes to the dead-letter table."""
    import numpy as np
    import pandas as pd

    from include.models.recommender import HybridRecommender

    shard, of = descriptor["shard"], descriptor["of"]
    job_id = f"{run.run_key}:{shard}/{of}"
    started = time.monotonic()
    window = run.query_params(descriptor)
    source = Database(SOURCE_CONN_ID)
    totals = {"customers": 0, "recommendations": 0, "discovery_recommendations": 0, "staged_rows": 0,
              "order_lines": 0}
    score_min, score_max = 1.0, 0.0
    failures: list[dict[str, Any]] = []
    generated_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    empty = backup_rows(pd.DataFrame(columns=list(_RECS_COLUMNS)), run.week, generated_at)
    stage = contextlib.nullcontext(len) if run.dry_run else staging.writing(JOB, run.run_key, shard, of, empty)
    try:
        active = source.frame("active_customers", window)["customer_id"].to_numpy()
        if run.user_ids is not None:
            active = active[np.isin(active, run.user_ids)]
        log.info("shard %d/%d: %d active customers", shard + 1, of, len(active))
        bad_rows = source_quality.quarantine(JOB, job_id, shard, window["history_start"], window["until"],
                                             run.dry_run)
        model = HybridRecommender.load(model_dir)
        wanted = min(run.top_n, len(model.item_ids_))
        progress = Progress(f"shard {shard + 1}/{of} customers", len(active), every=batch_size)
        with stage as write:
            for part, history in _history_parts(source, window, active, read_size):
                totals["order_lines"] += len(history)
                for first in range(0, len(part), batch_size):
                    batch = part[first:first + batch_size]
                    failed_before = len(failures)
                    recs = _recommend_isolated(model, history, batch, run.as_of, failures)
                    served = recs.groupby("customer_id").size() if recs is not None else pd.Series(dtype="int64")
                    raised = {f["customer_id"] for f in failures[failed_before:]}
                    short = [int(c) for c in batch if served.get(c, 0) < wanted and c not in raised]
                    failures += [{"customer_id": c, "error": f"got {int(served.get(c, 0))} of {wanted} "
                                  "recommendations", "stack_trace": None} for c in short]
                    totals["customers"] += len(batch)
                    if recs is not None and len(recs):
                        score_min = min(score_min, float(recs["score"].min()))
                        score_max = max(score_max, float(recs["score"].max()))
                        totals["recommendations"] += len(recs)
                        totals["discovery_recommendations"] += int((recs["source"] == "discovery").sum())
                        totals["staged_rows"] += write(backup_rows(recs, run.week, generated_at))
                    progress.update(succeeded=len(batch) - (len(failures) - failed_before),
                                    failed=len(failures) - failed_before)
    finally:
        source.close()

    if not run.dry_run:  # also when none failed: a retried shard replaces its earlier letters
        _record_failures(run, job_id, shard, of, failures)
    scored = totals["recommendations"] > 0
    stats = {"shard": shard, "of": of, **totals, "successful": progress.succeeded, "failed": progress.failed,
             **bad_rows, "score_min": round(score_min, 6) if scored else None,
             "score_max": round(score_max, 6) if scored else None,
             "seconds": round(time.monotonic() - started, 3)}
    log_summary(f"weekly_recs shard {shard + 1}/{of} scored and staged", stats)
    return stats


_RECS_COLUMNS = ("customer_id", "rank", "product_id", "score", "source", "product_name", "category",
                 "predicted_quantity", "last_purchased", "purchase_frequency_days")


def _record_failures(run: RecsRun, job_id: str, shard: int, of: int, failures: list[dict[str, Any]]) -> None:
    import pandas as pd

    letters = pd.DataFrame({
        "error": [f["error"] for f in failures], "stack_trace": [f["stack_trace"] for f in failures],
        "input": [{"customer_id": f["customer_id"], "as_of": run.as_of.isoformat(), "week": run.week,
                   "shard": shard, "of": of} for f in failures]})
    with Database(RESULTS_CONN_ID) as results:
        dead_letters.record(results, JOB, job_id, letters)


def _history_parts(source: Database, window: dict[str, Any], active, read_size: int):
    """(customers, their order lines) for the `active` customers (sorted IDs of one shard),
    `read_size` customers per query; customers of the shard between them but not in `active`
    (a run for some ids) are left out. A customer without valid lines is still in `customers`."""
    for begin in range(0, len(active), read_size):
        part = active[begin:begin + read_size]
        history = _orders(source.bulk_frame("recs_shard_history", {
            **window, "first_customer": int(part[0]), "last_customer": int(part[-1])}))
        yield part, history[history["customer_id"].isin(part)]


def publish_shard(run: RecsRun, descriptor: dict[str, int]) -> dict[str, Any]:
    """Make one shard's staged rows live, after `validate` passed: SET `{week}:{customer_id}` in
    pipelined chunks (each key goes from its old value to the new one, never missing), unlink the
    keys of the shard's customers the run no longer recommends to (those that had rows of the
    week, or that the run was asked for), then replace the shard's backup rows in one
    transaction. A retry does the same again."""
    shard, of = descriptor["shard"], descriptor["of"]
    if run.dry_run:
        return {"shard": shard, "of": of, "keys_written": 0, "keys_removed": 0, "backup_rows": 0}
    import pandas as pd

    started = time.monotonic()
    rows = staging.load(JOB, run.run_key, shard, of)
    expires_at = int(time.time()) + run.ttl
    rows["ExpiresAt"] = pd.Timestamp(expires_at, unit="s")
    params = {"week": run.week, "shard": shard, "of": of}
    with Database(RESULTS_CONN_ID) as results:
        if run.user_ids is None:
            before = results.frame("weekly_recommendation_customers", params)["customer_id"].astype("int64").tolist()
        else:
            before = run.requested(shard, of)
        cache = RedisCache(chunk_size=config.get_int("REDIS_CHUNK_SIZE"))
        try:
            written, fresh = write_keys(cache, rows, expires_at)
            key = config.get("RECS_KEY")
            removed = cache.delete_many([key.format(week=run.week, customer_id=c) for c in before if c not in fresh])
        finally:
            cache.close()
        if run.user_ids is None:
            delete, delete_params = "delete_weekly_recommendations", params
        else:
            delete = "delete_weekly_recommendations_customer"
            delete_params = [{"week": run.week, "customer_id": int(c)} for c in before]
        backup = BulkWriter(results).load("WeeklyRecommendation", rows, delete=delete, params=delete_params)
    stats = {"shard": shard, "of": of, "keys_written": written, "keys_removed": removed, "backup_rows": backup,
             "seconds": round(time.monotonic() - started, 3)}
    log_summary(f"weekly_recs shard {shard + 1}/{of} published", stats)
    return stats


def write_keys(cache: RedisCache, rows, expires_at: int | None = None) -> tuple[int, set[int]]:
    """SET the `{week}:{customer_id}` documents of `rows` (WeeklyRecommendation rows sorted by
    customer and rank), each to expire at `expires_at` or, without it, at the rows' own ExpiresAt;
    (keys written, customers written). Shared by publish and restore."""
    key = config.get("RECS_KEY")
    documents = recommendation_documents(rows)
    if expires_at is not None:
        expiry = [expires_at] * len(documents)
    else:
        first = rows.drop_duplicates("CustomerID")
        expiry = _unix_seconds(first["ExpiresAt"]).tolist()
    week = rows["Week"].iloc[0] if len(rows) else ""
    written = 0
    for at in sorted(set(expiry)):  # one pipeline stream per expiry (one for a publish)
        written += cache.set_many(((key.format(week=week, customer_id=c), d)
                                   for (c, d), e in zip(documents, expiry) if e == at), None, expire_at=at)
    return written, {c for c, _ in documents}


def _unix_seconds(times):
    """Naive UTC timestamps as unix seconds, whatever unit the driver returned."""
    import pandas as pd

    return pd.to_datetime(times).dt.as_unit("s").astype("int64")


def restore_week(week: str, parts: int = 16) -> dict[str, Any]:
    """Rewrite the week's `{week}:{customer_id}` keys from WeeklyRecommendation (seed 000's fallback
    when Redis loses data), with the values and expiry publish gave them; keys whose expiry has
    passed stay gone. Read `parts` shards of the week at a time, so memory stays flat."""
    import pandas as pd

    started = time.monotonic()
    now = int(time.time())
    totals = {"week": week, "rows": 0, "keys_written": 0, "expired_customers": 0}
    cache = RedisCache(chunk_size=config.get_int("REDIS_CHUNK_SIZE"))
    progress = Progress(f"restore {week} parts", parts, every=1)
    try:
        with Database(RESULTS_CONN_ID) as results:
            for shard in range(parts):
                rows = results.bulk_frame("weekly_recommendation_rows", {"week": week, "shard": shard, "of": parts})
                totals["rows"] += len(rows)
                expiry = pd.to_datetime(rows["ExpiresAt"])
                live = expiry.notna() & (_unix_seconds(expiry.fillna(pd.Timestamp(0))) > now)
                totals["expired_customers"] += rows.loc[~live, "CustomerID"].nunique()
                written, _ = write_keys(cache, rows[live].reset_index(drop=True))
                totals["keys_written"] += written
                progress.update(succeeded=1)
    finally:
        cache.close()
    totals["seconds"] = round(time.monotonic() - started, 3)
    log_summary(f"weekly_recs keys of {week} restored from WeeklyRecommendation", totals)
    return totals


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
    asked_for_none = run.user_ids is not None and not customers  # requested ids none of which is active
    checks = {
        "coverage": asked_for_none or summary["coverage"] >= config.get_float("RECS_MIN_COVERAGE"),
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


def finalize(run: RecsRun, summary: dict[str, Any], last_week: dict[str, Any],
             started_at: dt.datetime | None) -> dict[str, Any]:
    """After every shard published: flip recs:current_week to this week and write the run summary
    (only for a run of every customer, and never back to an older week), emit the run's metrics,
    discard the staged rows."""
    now = dt.datetime.now(dt.timezone.utc)
    duration = (now - started_at).total_seconds() if started_at else summary.get("seconds", 0.0)
    metadata = {"week": run.week, "as_of_date": run.as_of.isoformat(), "completed_at": now.isoformat(timespec="seconds"),
                "processed": summary.get("customers", 0), "successful": summary.get("successful", 0),
                "failed": summary.get("failed", 0), "total_recommendations": summary.get("recommendations", 0),
                "discovery_recommendations": summary.get("discovery_recommendations", 0),
                "duration_seconds": round(duration, 1),
                "rate_per_second": round(summary.get("customers", 0) / duration, 1) if duration else None,
                "coverage": summary.get("coverage"), "last_week": last_week,
                "bad_source_rows": source_quality.run_counts(summary), "dry_run": run.dry_run,
                "user_ids": len(run.user_ids) if run.user_ids is not None else None}
    pointer_moved = False
    if not run.dry_run:
        cache = RedisCache()
        try:
            pointer = config.get("RECS_POINTER_KEY")
            if run.user_ids is None and not_older(cache, pointer, None, run.week):
                cache.client.set(pointer, run.week)
                cache.set_json(config.get("RECS_METADATA_KEY"), metadata, ttl=run.ttl)
                pointer_moved = True
        finally:
            cache.close()
        staging.discard(JOB, run.run_key)
    metadata["pointer_moved"] = pointer_moved
    for name in ("hit_rate", "recall@25"):
        if last_week.get(name) is not None:
            metrics.quality(JOB, f"last_week_{name.replace('@', '_at_')}", last_week[name])
    metrics.job_run(JOB, "success", duration, summary.get("customers", 0))
    log_summary("weekly_recs published" if not run.dry_run else "weekly_recs dry run (nothing written)", metadata)
    return metadata

"""Backfill: a job's own steps again for each as_of in a date range, for every or some entities.

check_conf -> dates -> backfill_date (one mapped task per as_of) -> report -> check_outcome.

`check_conf` says what the Params schema cannot (start <= end, end not in the future, a span of
at most BACKFILL_MAX_DAYS, ids of the kind the job takes, ids that exist in Product / Client)
before any write. Each date runs the job module's functions in the order of its DAG, with the
job's own settings object for that as_of, so a backfill computes exactly what the job would
have. Dates: every day of the range; weekly_recs one as_of per ISO week (the week's last day in
the range); faiss_rebuild has no as_of (the catalogue has no history): one rebuild.

Entities: product_ids filter forecast_worker, user_ids weekly_recs, order_insights and
user_affinity (the rows of the shard query are filtered in pandas, so no array SQL). Before a
date runs for given entities, the keys it would rewrite are deleted, so no stale value survives
an entity that now yields nothing:
  forecast_worker  FORECAST_KEY `forecast:{product_id}` of the given products
  weekly_recs      RECS_KEY `{week}:{customer_id}` of the given customers (without ids: every
                   `{week}:*` key of that week), and only their WeeklyRecommendation rows
  order_insights   INSIGHTS_KEY `recommendations:user:{customer_id}` of the given users
  user_affinity    `affinity:user:{id}`: publish replaces each recomputed user's hash (deleted
                   when the user has no affinity left), so nothing to delete first
Entities a date sent to the dead-letter table (forecast_worker, order_insights) are re-run once
each, alone (at most BACKFILL_MAX_ENTITY_RETRIES per date), and counted as recovered or failed.

Pointers never move back: recs:current_week / recs:metadata:last_run, forecast:metadata:last_run,
recommendations:metadata:last_run are written (the job's publish) only by a whole run (no ids)
of a date not older than the one they describe; user_affinity's watermark moves only on such a
run too (publish(move_watermark=False)). popularity, popular_segments and user_affinity keep only
the current state (scores, sorted sets, affinity rows): a backfill replays the dates in order, so
the end_date's values stay live until the next scheduled run. cf_training trains and shadow-
evaluates a candidate version per date but never promotes it (run cf_training to promote).

`features` picks sub-steps of a feature job: user_affinity "affinity" (user_category_affinity and
the hashes) and/or "profiles" (user_profiles). dry_run writes no key, row or report row: the
sharded jobs (forecast_worker, weekly_recs, order_insights) compute everything and count it;
the others only resolve their settings and check their inputs. Every date gives one report row
(succeeded, failed, skipped: products or customers for the sharded jobs, users with / without an
affinity hash for user_affinity, the run itself for the others); a date that fails does not stop
the others, and a run with a failed or partial date fails at the end, after the report.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from include.jobs.run_params import RunSettings
from include.runtime import config
from include.runtime.config import RESULTS_CONN_ID, SOURCE_CONN_ID
from include.runtime.progress import log_summary

log = logging.getLogger(__name__)

JOBS = ("forecast_worker", "weekly_recs", "order_insights", "popularity", "popular_segments", "user_affinity",
        "cf_training", "faiss_rebuild")
ENTITY_IDS = {"forecast_worker": "product_ids", "weekly_recs": "user_ids", "order_insights": "user_ids",
              "user_affinity": "user_ids"}
FEATURES = {"user_affinity": ("affinity", "profiles")}  # include/jobs/user_affinity.py FEATURES
MAX_IDS = 10_000
_ID_SOURCE = {"product_ids": ("product_ids_between", "Product"), "user_ids": ("client_ids_between", "Client")}
_DETAIL_IDS = 50  # ids listed per outcome in a report row's detail


def _fail(message: str):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"backfill conf: {message}")


@dataclass(frozen=True)
class BackfillRun(RunSettings):
    """The checked conf of one backfill run."""

    job: str
    start: dt.date
    end: dt.date
    product_ids: list[int] | None
    user_ids: list[int] | None
    features: list[str] | None
    dry_run: bool
    run_key: str

    @property
    def ids(self) -> list[int] | None:
        """The entity filter of this job (None: every entity)."""
        kind = ENTITY_IDS.get(self.job)
        return getattr(self, kind) if kind else None

    @property
    def whole(self) -> bool:
        """A run of every entity and every step: the only kind that may move pointers."""
        return self.ids is None and self.features is None


def _date(params: dict[str, Any], name: str) -> dt.date:
    raw = params.get(name)
    try:
        return dt.date.fromisoformat(raw)
    except (TypeError, ValueError):
        raise _fail(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from None


def _missing_ids(kind: str, ids: list[int]) -> list[int]:
    """The ids not in the source table (one range query, compared in pandas)."""
    from include.runtime.database import Database

    query, _ = _ID_SOURCE[kind]
    with Database(SOURCE_CONN_ID) as db:
        found = db.frame(query, {"low": ids[0], "high": ids[-1]})
    return sorted(set(ids) - set(found["id"].astype("int64").tolist()))


def check_conf(params: dict[str, Any], today: dt.date, run_key: str) -> BackfillRun:
    """The conf as a BackfillRun, or AirflowFailException naming the first mistake."""
    job = params.get("job")
    if job not in JOBS:
        raise _fail(f"job must be one of {list(JOBS)}, got {job!r}")
    start, end = _date(params, "start_date"), _date(params, "end_date")
    if start > end:
        raise _fail(f"start_date {start} is after end_date {end}; swap them")
    if end > today:
        raise _fail(f"end_date {end} is in the future (today is {today}); a backfill recomputes past dates")
    span, limit = (end - start).days + 1, config.get_int("BACKFILL_MAX_DAYS")
    if span > limit:
        raise _fail(f"{start}..{end} spans {span} days, more than BACKFILL_MAX_DAYS ({limit}); "
                    "split it into several backfills or raise the setting")
    ids: dict[str, list[int] | None] = {}
    for kind in ("product_ids", "user_ids"):
        given = params.get(kind)
        if given is None:
            ids[kind] = None
            continue
        if ENTITY_IDS.get(job) != kind:
            raise _fail(f"job {job} takes no {kind} ({', '.join(f'{k} apply to {j}' for j, k in ENTITY_IDS.items())}); "
                        f"remove {kind} or pick another job")
        if not given:
            raise _fail(f"{kind} is an empty list; leave it null to backfill every entity")
        if len(given) > MAX_IDS:
            raise _fail(f"{kind} holds {len(given)} ids, at most {MAX_IDS}; split the backfill")
        ids[kind] = sorted({int(i) for i in given})
        missing = _missing_ids(kind, ids[kind])
        if missing:
            raise _fail(f"{len(missing)} of the {len(ids[kind])} {kind} do not exist in {_ID_SOURCE[kind][1]}: "
                        f"{missing[:10]}{' ...' if len(missing) > 10 else ''}; remove them")
    features = params.get("features")
    if features is not None:
        allowed = FEATURES.get(job)
        if not allowed:
            raise _fail(f"job {job} has no features to pick (features apply to {sorted(FEATURES)}); remove features")
        unknown = sorted(set(features) - set(allowed))
        if unknown or not features:
            raise _fail(f"features of {job} are a non-empty subset of {list(allowed)}, got {features}")
        features = [f for f in allowed if f in features]
    run = BackfillRun(job=job, start=start, end=end, product_ids=ids["product_ids"], user_ids=ids["user_ids"],
                      features=features, dry_run=bool(params.get("dry_run", False)), run_key=run_key)
    log_summary("backfill conf checked", {**run.to_dict(), "product_ids": _few(run.product_ids),
                                          "user_ids": _few(run.user_ids), "days": span})
    return run


def _few(ids: list[int] | None) -> Any:
    return ids if ids is None or len(ids) <= 10 else f"{len(ids)} ids: {ids[:10]} ..."


def dates(run: BackfillRun) -> list[dict[str, str]]:
    """One small descriptor per as_of, oldest first."""
    from include.jobs.weekly_recs import iso_week

    days = [run.start + dt.timedelta(days=n) for n in range((run.end - run.start).days + 1)]
    if run.job == "faiss_rebuild":
        days = [run.end]
    elif run.job == "weekly_recs":
        last_of_week: dict[str, dt.date] = {}
        for day in days:
            last_of_week[iso_week(day)] = day
        return [{"as_of": d.isoformat(), "week": w} for w, d in last_of_week.items()]
    return [{"as_of": d.isoformat()} for d in days]


# ---- Redis helpers ---------------------------------------------------------------------------

def _cache():
    from include.runtime.redis_cache import RedisCache

    return RedisCache(chunk_size=config.get_int("REDIS_CHUNK_SIZE"))


def _invalidate(keys: list[str] | None = None, pattern: str | None = None) -> int:
    """Delete `keys` or the keys matching `pattern` (the values the date will rewrite for its
    entities); how many existed."""
    cache = _cache()
    try:
        return cache.delete_many(keys if pattern is None else cache.matching(pattern))
    finally:
        cache.close()


def _existing(keys: list[str]) -> list[bool]:
    cache = _cache()
    try:
        return cache.exist(keys)
    finally:
        cache.close()


def _dead_letter_ids(job_id: str, field: str) -> list[int]:
    """The entities the date's shards (job ids `job_id:...`) sent to the dead-letter table."""
    from include.runtime.database import Database

    from include.runtime.source_quality import JOB_ID_SUFFIX

    with Database(RESULTS_CONN_ID) as db:
        rows = db.frame("dead_letters_of_run", {"prefix": f"{job_id}:%"})
    # quarantined source rows are bad data of the shard, not failed entities: not retried
    return sorted({int(json.loads(raw)[field]) for name, raw in zip(rows["job_id"], rows["input"])
                   if not name.endswith(JOB_ID_SUFFIX)})


# ---- one date of each job --------------------------------------------------------------------

def _shards_of(descriptors: list[dict[str, int]], ids: list[int] | None) -> list[dict[str, int]]:
    """The shards holding any of `ids` (an entity is in shard id % of)."""
    if ids is None:
        return descriptors
    return [d for d in descriptors if any(i % d["of"] == d["shard"] for i in ids)]


def _outcome(run: BackfillRun, processed: int, succeeded: int, failed: list[int] | int, skipped: int,
             key_of: Callable[[int], str] | None = None, **detail) -> dict[str, Any]:
    """Counts for an entity job's date: with ids, the ids not processed are skipped and (after a
    real run) listed by whether their key was written."""
    failed_ids = failed if isinstance(failed, list) else []
    failed_count = len(failed) if isinstance(failed, list) else failed
    result = {"succeeded": succeeded, "failed": failed_count, "skipped": skipped, **detail}
    if run.ids is not None:
        result["skipped"] = skipped + len(run.ids) - processed
        if key_of is not None and not run.dry_run:
            written = _existing([key_of(i) for i in run.ids])
            result["skipped_ids"] = [i for i, w in zip(run.ids, written) if not w and i not in failed_ids][:_DETAIL_IDS]
    if failed_ids:
        result["failed_ids"] = failed_ids[:_DETAIL_IDS]
    return result


def _retry_each(failed: list[int], rerun: Callable[[int], dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Re-run each failed entity alone, once; (recovered, still failed)."""
    limit = config.get_int("BACKFILL_MAX_ENTITY_RETRIES")
    recovered, still = [], list(failed[limit:])
    for entity in failed[:limit]:
        (still if rerun(entity).get("failed") else recovered).append(entity)
    if failed:
        over = f" ({len(failed) - limit} over the retry limit)" if len(failed) > limit else ""
        log.info("retried %d failed entities one by one: %d recovered, %d still failed%s",
                 min(len(failed), limit), len(recovered), len(still), over)
    return recovered, still


def _gate(run: BackfillRun, processed: int,
          validate: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """The job's validate: (summary, None) or (None, its message). Given ids of which none was
    eligible at that date are skipped entities, not a coverage failure: nothing to validate."""
    from airflow.sdk.exceptions import AirflowFailException

    if run.ids is not None and not processed:
        return None, None
    try:
        return validate(), None
    except AirflowFailException as exc:
        return None, str(exc)


def _not_older(key: str, field: str, value: str) -> bool:
    """Whether `value` is at least what the metadata/pointer key holds (missing: yes)."""
    cache = _cache()
    try:
        current = cache.get(key) if field == "" else (cache.get_json(key) or {}).get(field)
    finally:
        cache.close()
    return current is None or str(current) <= value


def _forecast(run: BackfillRun, as_of: dt.date, item: dict, job_id: str, today: dt.date) -> dict[str, Any]:
    from include.jobs import forecast_worker as job

    settings = job.ForecastRun.from_params({"as_of_date": as_of.isoformat(), "dry_run": run.dry_run}, as_of, today)
    key = config.get("FORECAST_KEY")
    key_of = lambda p: key.format(product_id=p)  # noqa: E731
    invalidated = _invalidate([key_of(p) for p in run.ids]) if run.ids and not run.dry_run else 0
    shards = _shards_of(job.plan(settings), run.ids)
    stats = [job.process_shard(settings, d, f"{job_id}:{d['shard']}/{d['of']}", only_products=run.ids) for d in shards]
    failed = _dead_letter_ids(job_id, "product_id") if not run.dry_run else []
    of = shards[0]["of"] if shards else 1
    recovered, failed = _retry_each(failed, lambda p: job.process_shard(
        settings, {"shard": p % of, "of": of, "cutoff_orders": 0, "cutoff_product": 0}, f"{job_id}:retry:{p}",
        only_products=[p]))
    sums = {k: sum(s.get(k, 0) for s in stats) for k in ("products", "successful", "failed", "no_forecast")}
    summary, problem = _gate(run, sums["products"], lambda: job.validate(
        settings, stats + [{"successful": len(recovered), "failed": -len(recovered)}]))
    if summary is not None and run.whole and _not_older(config.get("FORECAST_METADATA_KEY"), "as_of_date",
                                                         as_of.isoformat()):
        job.publish(settings, summary, None)
    return _outcome(run, sums["products"], sums["successful"] + len(recovered),
                    failed if not run.dry_run else sums["failed"], sums["no_forecast"], key_of,
                    recovered=len(recovered), keys_invalidated=invalidated, validation=problem)


def _weekly(run: BackfillRun, as_of: dt.date, item: dict, job_id: str, today: dt.date) -> dict[str, Any]:
    from include.jobs import weekly_recs as job

    settings = job.RecsRun.from_params({"as_of_date": as_of.isoformat(), "week": item["week"],
                                        "dry_run": run.dry_run}, as_of, today, job_id.replace(":", "_"))
    key = config.get("RECS_KEY")
    key_of = lambda c: key.format(week=settings.week, customer_id=c)  # noqa: E731
    model_dir = job.prepare(settings)["model_dir"]
    shards = _shards_of(job.plan(settings), run.ids)
    invalidated = 0
    if not run.dry_run:  # after the slow prepare: the week's keys are missing for the shortest time
        invalidated = (_invalidate([key_of(c) for c in run.ids]) if run.ids
                       else _invalidate(pattern=key.format(week=settings.week, customer_id="*")))
    stats = [job.process_shard(settings, d, model_dir, only_customers=run.ids) for d in shards]
    sums = {k: sum(s.get(k, 0) for s in stats) for k in ("customers", "successful", "failed")}
    summary, problem = _gate(run, sums["customers"], lambda: job.validate(settings, stats))
    if summary is not None and run.whole and _not_older(config.get("RECS_POINTER_KEY"), "", settings.week):
        job.publish(settings, summary, job.feedback(settings), None)
    return _outcome(run, sums["customers"], sums["successful"], sums["failed"], 0, key_of, week=settings.week,
                    keys_invalidated=invalidated, validation=problem)


def _insights(run: BackfillRun, as_of: dt.date, item: dict, job_id: str, today: dt.date) -> dict[str, Any]:
    from include.jobs import order_insights as job

    settings = job.InsightsRun.from_params({"as_of_date": as_of.isoformat(), "dry_run": run.dry_run}, as_of, today)
    key = config.get("INSIGHTS_KEY")
    key_of = lambda c: key.format(customer_id=c)  # noqa: E731
    invalidated = _invalidate([key_of(c) for c in run.ids]) if run.ids and not run.dry_run else 0
    shards = _shards_of(job.plan(settings), run.ids)
    stats = [job.process_shard(settings, d["shard"], d["of"], f"{job_id}:{d['shard']}/{d['of']}",
                               only_customers=run.ids) for d in shards]
    failed = _dead_letter_ids(job_id, "customer_id") if not run.dry_run else []
    of = shards[0]["of"] if shards else 1
    recovered, failed = _retry_each(failed, lambda c: job.process_shard(
        settings, c % of, of, f"{job_id}:retry:{c}", only_customers=[c]))
    sums = {k: sum(s.get(k, 0) for s in stats) for k in ("users", "successful", "failed")}
    summary, problem = _gate(run, sums["users"], lambda: job.validate(
        settings, stats + [{"successful": len(recovered), "failed": -len(recovered)}]))
    if summary is not None and run.whole and _not_older(config.get("INSIGHTS_METADATA_KEY"), "as_of_date",
                                                         as_of.isoformat()):
        job.publish(settings, summary, None)
    return _outcome(run, sums["users"], sums["successful"] + len(recovered),
                    failed if not run.dry_run else sums["failed"], 0, key_of,
                    recovered=len(recovered), keys_invalidated=invalidated, validation=problem)


def _event_as_of(as_of: dt.date) -> str:
    """The end of the day (the event jobs take a time), never past now."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    return min(dt.datetime.combine(as_of, dt.time(23, 59, 59)), now).isoformat()


def _affinity(run: BackfillRun, as_of: dt.date, item: dict, job_id: str, today: dt.date) -> dict[str, Any]:
    from include.jobs import user_affinity as job

    watermark = job.read_watermark()
    now = dt.datetime.now(dt.timezone.utc)
    settings = job.AffinityRun.from_params({"as_of": _event_as_of(as_of)}, now, now, watermark,
                                           f"{run.run_key}:{as_of.isoformat()}")
    inputs = job.check_inputs(settings)
    if run.dry_run:
        return {"succeeded": 0, "failed": 0, "skipped": len(run.ids or []), "inputs": inputs,
                "mode": "full" if settings.full_rebuild else "incremental"}
    stats = job.compute(settings, inputs, user_ids=run.ids, features=run.features)
    moves = run.whole and (watermark is None or settings.as_of >= watermark)
    published = job.publish(settings, stats, None, move_watermark=moves)
    return {"succeeded": published["redis_hashes"], "failed": 0, "skipped": published["redis_deleted"],
            "users_recomputed": stats["users_recomputed"], "watermark_moved": moves, "features": run.features}


def _popularity(run: BackfillRun, as_of: dt.date, item: dict, job_id: str, today: dt.date) -> dict[str, Any]:
    from include.jobs import popularity as job

    now = dt.datetime.now(dt.timezone.utc)
    segments = run.job == job.SEGMENTS_JOB
    settings = job.PopularityRun.from_params({"as_of": _event_as_of(as_of)}, now, now, segments=segments)
    inputs = job.check_inputs(settings, run.job)
    if run.dry_run:
        return {"succeeded": 0, "failed": 0, "skipped": 1, "inputs": inputs}
    stats = (job.refresh_segments(settings, inputs) if segments
             else job.publish(settings, job.score(settings, inputs), None))
    return {"succeeded": 1, "failed": 0, "skipped": 0, "stats": stats}


def _cf(run: BackfillRun, as_of: dt.date, item: dict, job_id: str, today: dt.date) -> dict[str, Any]:
    from include.jobs import cf_training as job

    settings = job.CFRun.from_params({"as_of_date": as_of.isoformat()}, as_of, today)
    if run.dry_run:
        return {"succeeded": 0, "failed": 0, "skipped": 1}
    return {"succeeded": 1, "failed": 0, "skipped": 0, "trained": job.train(settings)}


def _faiss(run: BackfillRun, as_of: dt.date, item: dict, job_id: str, today: dt.date) -> dict[str, Any]:
    from include.jobs import faiss_rebuild as job

    settings = job.FaissRun.from_params({})
    if run.dry_run:
        return {"succeeded": 0, "failed": 0, "skipped": 1}
    return {"succeeded": 1, "failed": 0, "skipped": 0, "published": job.publish(settings, job.build(settings), None)}


_RUNNERS = {"forecast_worker": _forecast, "weekly_recs": _weekly, "order_insights": _insights,
            "user_affinity": _affinity, "popularity": _popularity, "popular_segments": _popularity,
            "cf_training": _cf, "faiss_rebuild": _faiss}


def backfill_date(run: BackfillRun, item: dict[str, str], run_id: str, final_try: bool = True) -> dict[str, Any]:
    """Run the job for one as_of; a report row. A permanent failure (the job's AirflowFailException,
    or any error on the final try) becomes a failed row so the other dates go on; other errors
    raise while Airflow has retries left."""
    from airflow.sdk.exceptions import AirflowFailException

    as_of = dt.date.fromisoformat(item["as_of"])
    today = dt.datetime.now(dt.timezone.utc).date()
    started = time.monotonic()
    try:
        outcome = _RUNNERS[run.job](run, as_of, item, f"backfill:{run_id}:{as_of.isoformat()}", today)
    except AirflowFailException as exc:
        outcome = {"succeeded": 0, "failed": len(run.ids or [None]), "skipped": 0, "error": str(exc)}
    except Exception as exc:
        if not final_try:
            raise
        log.exception("backfill of %s as of %s failed", run.job, as_of)
        outcome = {"succeeded": 0, "failed": len(run.ids or [None]), "skipped": 0,
                   "error": f"{type(exc).__name__}: {exc}"}
    broken = outcome["failed"] > 0 or outcome.get("error") or outcome.get("validation")
    status = "succeeded" if not broken else "partial" if outcome["succeeded"] else "failed"
    row = {"as_of": as_of.isoformat(), "status": status, "seconds": round(time.monotonic() - started, 1),
           **{k: v for k, v in outcome.items() if v is not None}}
    log_summary(f"backfill {run.job} as of {as_of}: {status}{' (dry run, nothing written)' if run.dry_run else ''}",
                {k: v for k, v in row.items() if k not in ("inputs", "stats", "trained", "published")})
    return row


def report(run: BackfillRun, rows: list[dict[str, Any]], run_id: str,
           started_at: dt.datetime | None = None) -> dict[str, Any]:
    """One backfill_report row per date (not on a dry run), the log summary, the XCom summary,
    the run's metrics (nightshift.job.backfill.*; a partial run counts as failed)."""
    import pandas as pd

    from include.runtime import metrics
    from include.runtime.bulk_writer import BulkWriter
    from include.runtime.database import Database

    rows = sorted(rows, key=lambda r: r["as_of"])
    totals = {k: sum(int(r.get(k, 0)) for r in rows) for k in ("succeeded", "failed", "skipped")}
    statuses = {s: [r["as_of"] for r in rows if r["status"] == s] for s in ("succeeded", "partial", "failed")}
    summary = {"run_id": run_id, "job": run.job, "start_date": run.start.isoformat(), "end_date": run.end.isoformat(),
               "dry_run": run.dry_run, "dates": len(rows), **totals,
               "dates_partial": statuses["partial"], "dates_failed": statuses["failed"],
               "status": "succeeded" if not statuses["partial"] and not statuses["failed"] else "partial"
               if statuses["succeeded"] or statuses["partial"] else "failed",
               "rows": [{k: r[k] for k in ("as_of", "status", "succeeded", "failed", "skipped")} for r in rows]}
    if not run.dry_run:
        frame = pd.DataFrame({
            "run_id": run_id, "job_name": run.job, "as_of": [dt.date.fromisoformat(r["as_of"]) for r in rows],
            "succeeded": [int(r["succeeded"]) for r in rows], "failed": [int(r["failed"]) for r in rows],
            "skipped": [int(r["skipped"]) for r in rows],
            "detail": [json.dumps({k: v for k, v in r.items() if k not in ("as_of", "succeeded", "failed", "skipped")},
                                  default=str) for r in rows]})
        with Database(RESULTS_CONN_ID) as db:
            BulkWriter(db).load("backfill_report", frame, delete="delete_backfill_report", params={"run_id": run_id})
    for r in rows:
        log.info("  %s %-9s succeeded %d failed %d skipped %d%s", r["as_of"], r["status"], r["succeeded"], r["failed"],
                 r["skipped"], f"  {r.get('error') or r.get('validation')}" if r["status"] != "succeeded" else "")
    log_summary(f"backfill {run.job} {run.start}..{run.end} {summary['status']}"
                f"{' (dry run, nothing written)' if run.dry_run else ''}",
                {k: v for k, v in summary.items() if k != "rows"})
    duration = (dt.datetime.now(dt.timezone.utc) - started_at).total_seconds() if started_at else 0.0
    metrics.quality("backfill", "failed_entities", totals["failed"])
    metrics.job_run("backfill", "success" if summary["status"] == "succeeded" else "failed", duration,
                    totals["succeeded"])
    return summary


def check_outcome(summary: dict[str, Any]) -> None:
    """Fail the run when a date failed or was partial: the report is already written."""
    from airflow.sdk.exceptions import AirflowFailException

    if summary["status"] != "succeeded":
        raise AirflowFailException(
            f"backfill of {summary['job']} {summary['status']}: dates failed {summary['dates_failed']}, partial "
            f"{summary['dates_partial']}; {summary['succeeded']} succeeded, {summary['failed']} failed, "
            f"{summary['skipped']} skipped. Per date and entity: backfill_report run_id {summary['run_id']!r} "
            "(detail lists failed ids and errors); re-run the failed dates or ids.")

"""Backfill: a job's own DAG again for each as_of in a date range, for every or some entities.

check_conf -> job_runs -> run_job (one triggered run of the job's DAG per as_of, waited for)
-> report -> check_outcome.

`check_conf` says what the Params schema cannot (start <= end, end not in the future, a span of
at most BACKFILL_MAX_DAYS, ids of the kind the job takes, ids that exist in Product / Client)
before anything runs. Then every date is a run of the job's own DAG, triggered with conf
(TriggerDagRunOperator, run id `backfill__<backfill run>__<as_of>`) and waited for, one at a
time, oldest first: the job's params, per-shard retries, validation, staged publication and
dead letters apply to a backfill unchanged, and a backfill of the live week replaces each key
only after its run validated. Dates: every day of the range; weekly_recs one as_of per ISO week
(the week's last day in the range); faiss_rebuild has no as_of (the catalogue has no history):
one rebuild.

The conf each job gets (job_conf): forecast_worker {as_of_date, product_ids}; weekly_recs
{as_of_date, week, user_ids}; order_insights {as_of_date, user_ids}; user_affinity {as_of (end of
the day), user_ids, features}; popularity and popular_segments {as_of}; cf_training {as_of_date,
shadow: true} (trains and shadow-evaluates, never promotes); faiss_rebuild {}. The jobs
themselves keep pointers from moving back: recs:current_week and the run metadata keys move only
for a run of every entity not older than what they describe; user_affinity's watermark moves
with every run of all users and features (an older one is a full rebuild, so the watermark
follows what the tables then hold) and never with a run for some users or features; a run for
some ids replaces only those ids' keys (and removes the keys of ids that now get
nothing).

`report` reads each triggered run's state and its summary (the job's `validate` XCom) and writes
one backfill_report row per date (succeeded / failed / skipped entities, the run id, the error);
a failed date does not stop the others, and `check_outcome` fails the backfill after the report
when any date failed. `dry_run` triggers nothing: the report lists the run each date would get.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
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
BACKFILL_POKE_SECONDS = 5  # how often run_job looks at its job run's state
_ID_SOURCE = {"product_ids": ("product_ids_between", "Product"), "user_ids": ("client_ids_between", "Client")}


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


# The job task whose XCom holds a run's counts, and the fields that count entities.
SUMMARY_TASK = {"forecast_worker": "validate", "weekly_recs": "validate", "order_insights": "validate",
                "user_affinity": "compute"}
# Why a requested id a job run did not process was skipped: the job's eligibility at that date.
SKIP_REASONS = {
    "forecast_worker": "not forecastable at that date (fewer than FORECAST_MIN_CUSTOMERS customers or "
                       "FORECAST_MIN_ORDERS orders since FORECAST_HISTORY_START)",
    "weekly_recs": "not an active customer at that date (no order in the RECS_ACTIVE_DAYS before it, or "
                   "inactive, blocked or deleted)",
    "order_insights": "not an insight user at that date (fewer than INSIGHTS_MIN_ORDERS orders in the "
                      "INSIGHTS_DAYS before it, or blocked or deleted)",
    "user_affinity": "no events in the window",
}
_COUNTS = {"forecast_worker": ("successful", "failed", "no_forecast"),
           "weekly_recs": ("successful", "failed", None), "order_insights": ("successful", "failed", None),
           "user_affinity": ("users_recomputed", None, None)}


def _event_as_of(as_of: dt.date) -> str:
    """The end of the day (the event jobs take a time), never past now."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    return min(dt.datetime.combine(as_of, dt.time(23, 59, 59)), now).isoformat()


def job_runs(run: BackfillRun, run_id: str) -> list[dict[str, str]]:
    """One descriptor per date: its as_of (and week) and the id of the job run it triggers."""
    safe = re.sub(r"[^A-Za-z0-9_.:+-]+", "_", run_id)
    return [{**item, "run_id": f"backfill__{safe}__{item['as_of']}"} for item in dates(run)]


def job_conf(run: BackfillRun, item: dict[str, str]) -> dict[str, Any]:
    """The conf of the job's DAG run for one date (see the module docstring)."""
    as_of = dt.date.fromisoformat(item["as_of"])
    ids = {ENTITY_IDS[run.job]: run.ids} if run.ids is not None else {}
    conf: dict[str, Any] = {
        "forecast_worker": {"as_of_date": item["as_of"], **ids},
        "weekly_recs": {"as_of_date": item["as_of"], "week": item.get("week"), **ids},
        "order_insights": {"as_of_date": item["as_of"], **ids},
        "user_affinity": {"as_of": _event_as_of(as_of), **ids, **({"features": run.features} if run.features else {})},
        "popularity": {"as_of": _event_as_of(as_of)},
        "popular_segments": {"as_of": _event_as_of(as_of)},
        "cf_training": {"as_of_date": item["as_of"], "shadow": True},
        "faiss_rebuild": {},
    }[run.job]
    return conf


def outcome(run: BackfillRun, item: dict[str, str], state: str | None, summary: dict[str, Any] | None) -> dict[str, Any]:
    """A date's report row from its job run's final state and the job's summary XCom."""
    conf = {k: f"{len(v)} ids" if k.endswith("_ids") else v for k, v in job_conf(run, item).items()}
    row: dict[str, Any] = {"as_of": item["as_of"], "run_id": item["run_id"], "state": state, "conf": conf}
    if item.get("week"):
        row["week"] = item["week"]
    if run.dry_run:
        return {**row, "status": "skipped", "succeeded": 0, "failed": 0, "skipped": len(run.ids or [None]),
                "state": "dry run: not triggered"}
    if state != "success":
        error = ("not triggered" if state is None else
                 f"{run.job} run {item['run_id']} ended {state}: its failed task's log says why (a failed "
                 "validation keeps the previous values live)")
        return {**row, "status": "failed", "succeeded": 0, "failed": len(run.ids or [None]), "skipped": 0,
                "error": error}
    good, bad, none = _COUNTS.get(run.job, (None, None, None))
    summary = summary or {}
    succeeded = int(summary.get(good, 0)) if good else 1
    failed = int(summary.get(bad, 0)) if bad else 0
    skipped = int(summary.get(none, 0)) if none else 0
    if run.ids is not None and good:  # requested ids the job did not process (not eligible then)
        skipped += max(len(run.ids) - succeeded - failed - skipped, 0)
    if skipped:
        row["skipped_reason"] = SKIP_REASONS.get(run.job)
    return {**row, "status": "partial" if failed else "succeeded", "succeeded": succeeded, "failed": failed,
            "skipped": skipped}


def collect(run: BackfillRun, items: list[dict[str, str]], state_of: Callable[[str], str | None],
            summary_of: Callable[[str, str], dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Each date's report row: `state_of(run_id)` is the job run's final state (None: no such run),
    `summary_of(task_id, run_id)` a task's XCom in it."""
    rows = []
    for item in items:
        state = None if run.dry_run else state_of(item["run_id"])
        summary = (summary_of(SUMMARY_TASK[run.job], item["run_id"])
                   if state == "success" and run.job in SUMMARY_TASK else None)
        rows.append(outcome(run, item, state, summary))
    return rows


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

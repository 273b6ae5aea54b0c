"""maintenance: expire what the TTLs and the jobs' own retention miss, every 6 hours.

resolve_settings -> restore_week_keys -> expire_redis_keys, and expire_dead_letters,
expire_backfill_reports, retain_model_versions (independent) -> summarize.

- `restore_week_keys` (only with the `restore_week` param): rewrites that week's
  `{week}:{customer_id}` keys from WeeklyRecommendation with their published values and expiry
  (include/jobs/weekly_recs.py restore_week, the code publish uses; also `python -m scripts.restore`).

- `expire_redis_keys`: one SCAN pass over the cache in chunks (never KEYS); every key is matched
  against the key templates the jobs write (TTL_RULES). Week keys `{week}:{customer_id}` of weeks
  more than `keep_weeks` before the reference week are unlinked in chunks. The reference is the
  earlier of `recs:current_week` and the run date's ISO week, so the week the API serves and the
  weeks after it are never touched. A key of a template with a TTL that has none (a writer cut off
  between SET and EXPIRE, a hand-written key, an older release) gets the template's full TTL.
  `recs:current_week` naming a week without keys is reported as an orphaned pointer (the API would
  serve nothing), not changed: rerunning weekly_recs for that week is a person's decision.
- `expire_dead_letters` / `expire_backfill_reports`: rows older than DEAD_LETTER_RETENTION_DAYS (30)
  / BACKFILL_REPORT_RETENTION_DAYS (90) go in batches of MAINTENANCE_DELETE_BATCH rows, each batch
  its own transaction, so a large backlog never holds a long lock.
- `retain_model_versions`: ModelStore.retain with the policies the training jobs apply after a run
  (cf_als: CF_KEEP_VERSIONS / CF_KEEP_DAYS; faiss_products: the live index plus FAISS_KEEP_HOURS),
  for the weeks those jobs do not run; a pointer naming a missing or unreadable version is reported.
- `summarize`: the counts per action, logged and returned, and the job metrics.

`dry_run` counts what each step would do and changes nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

from include.jobs.run_params import RunSettings, int_param
from include.runtime import config, metrics
from include.runtime.config import RESULTS_CONN_ID
from include.runtime.progress import Progress, log_summary

log = logging.getLogger(__name__)

JOB = "maintenance"
# Key template setting -> TTL setting, for every key the jobs write with an expiry (0: none).
# recs:current_week and the cf/faiss metadata keys live without a TTL by contract.
TTL_RULES = (
    ("RECS_KEY", "RECS_TTL"),
    ("RECS_METADATA_KEY", "RECS_TTL"),
    ("FORECAST_KEY", "FORECAST_CACHE_TTL"),
    ("FORECAST_METADATA_KEY", "FORECAST_CACHE_TTL"),
    ("INSIGHTS_KEY", "INSIGHTS_TTL"),
    ("INSIGHTS_METADATA_KEY", "INSIGHTS_TTL"),
    ("POPULAR_GLOBAL_KEY", "POPULARITY_TTL"),
    ("POPULAR_CATEGORY_KEY", "POPULARITY_TTL"),
    ("POPULAR_SEGMENT_KEY", "POPULAR_SEGMENT_TTL"),
    ("AFFINITY_KEY", "AFFINITY_TTL"),
)
# What a template field matches: ids are digits, so `forecast:{product_id}` never takes
# `forecast:metadata:last_run`; other fields (categories, segments) any text.
_FIELDS = {"week": r"(?P<week>\d{4}-W\d{2})", "customer_id": r"\d+", "product_id": r"\d+", "user_id": r"\d+"}
ACTIONS = ("week_keys_restored", "week_keys_deleted", "ttl_set", "orphaned_pointers", "dead_letters_deleted",
           "backfill_reports_deleted", "model_versions_deleted")


def _fail(message: str):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


@dataclass(frozen=True)
class MaintenanceRun(RunSettings):
    """A run's settings: DAG params over Variables/environment over the defaults."""

    run_at: str  # ISO UTC time the retention windows count back from (the run's date)
    keep_weeks: int
    dead_letter_days: int
    backfill_report_days: int
    delete_batch: int
    chunk_size: int
    dry_run: bool
    restore_week: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], run_at: dt.datetime) -> "MaintenanceRun":
        run = cls(run_at=run_at.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),
                  keep_weeks=int_param(params, "keep_weeks", "MAINTENANCE_KEEP_WEEKS"),
                  dead_letter_days=int_param(params, "dead_letter_retention_days", "DEAD_LETTER_RETENTION_DAYS"),
                  backfill_report_days=int_param(params, "backfill_report_retention_days",
                                                 "BACKFILL_REPORT_RETENTION_DAYS"),
                  delete_batch=config.get_int("MAINTENANCE_DELETE_BATCH"),
                  chunk_size=config.get_int("REDIS_CHUNK_SIZE"), dry_run=bool(params.get("dry_run", False)),
                  restore_week=params.get("restore_week"))
        if run.keep_weeks < 0 or run.dead_letter_days < 1 or run.backfill_report_days < 1:
            raise _fail(f"keep_weeks must be >= 0 and retention days >= 1, got keep_weeks={run.keep_weeks}, "
                        f"dead letters {run.dead_letter_days} days, backfill reports {run.backfill_report_days} "
                        "days; fix the params or MAINTENANCE_KEEP_WEEKS / *_RETENTION_DAYS")
        if run.delete_batch < 1 or run.chunk_size < 1:
            raise _fail(f"MAINTENANCE_DELETE_BATCH ({run.delete_batch}) and REDIS_CHUNK_SIZE ({run.chunk_size}) "
                        "must be positive")
        return run

    @property
    def at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.run_at)

    def cutoff(self, days: int) -> dt.datetime:
        """Naive UTC, like the tables' created_at columns."""
        return self.at.replace(tzinfo=None) - dt.timedelta(days=days)


# ---------------------------------------------------------------------------------------- Redis
@dataclass(frozen=True)
class _KeyRule:
    pattern: re.Pattern
    ttl: int


def _template_regex(template: str) -> re.Pattern:
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(_FIELDS.get(field, r".+"))
    return re.compile("".join(parts))


def _rules() -> list[_KeyRule]:
    return [_KeyRule(_template_regex(config.get(setting)), config.get_int(ttl)) for setting, ttl in TTL_RULES]


def _week_monday(week: str | None) -> dt.date | None:
    """Monday of ISO week `2025-W46`; None for anything else."""
    match = re.fullmatch(r"(\d{4})-W(\d{2})", week or "")
    try:
        return dt.date.fromisocalendar(int(match[1]), int(match[2]), 1) if match else None
    except ValueError:
        return None


def expire_redis_keys(run: MaintenanceRun) -> dict[str, Any]:
    """Unlink week keys of expired weeks, give TTL-less keys their TTL, report an orphaned week pointer."""
    from include.runtime.redis_cache import RedisCache

    cache = RedisCache(chunk_size=run.chunk_size)
    rules = _rules()
    pointer_key = config.get("RECS_POINTER_KEY")
    counts: Counter = Counter()
    kept_per_week: Counter = Counter()
    expired_weeks: set[str] = set()
    doomed: list[bytes] = []
    try:
        client = cache.client
        pointer = cache.get(pointer_key)
        today = run.at.date()
        reference = min(filter(None, (_week_monday(pointer), today - dt.timedelta(days=today.weekday()))))
        oldest_kept = reference - dt.timedelta(weeks=run.keep_weeks)
        log.info("week keys before the week of %s expire (%s = %s, run date %s, keep_weeks %d)%s",
                 oldest_kept, pointer_key, pointer, today, run.keep_weeks, " [dry run]" if run.dry_run else "")
        progress = Progress("maintenance redis scan", client.dbsize(), every=config.get_int("PROGRESS_EVERY"))

        def unlink(keys: list[bytes]) -> None:
            if keys and not run.dry_run:
                client.unlink(*keys)
            counts["week_keys_deleted"] += len(keys)

        for keys in cache.scan(count=run.chunk_size):
            needs_ttl: list[tuple[bytes, int]] = []
            for key in keys:  # matched as text, changed by the stored name (bytes)
                name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
                rule, match = next(((r, m) for r in rules if (m := r.pattern.fullmatch(name))), (None, None))
                if rule is None:
                    continue
                week = match.groupdict().get("week")
                monday = _week_monday(week)
                if monday is not None and monday < oldest_kept:
                    doomed.append(key)
                    expired_weeks.add(week)
                    continue
                if week:
                    kept_per_week[week] += 1
                if rule.ttl > 0:
                    needs_ttl.append((key, rule.ttl))
            counts["ttl_set"] += _set_missing_ttls(client, needs_ttl, run.dry_run)
            while len(doomed) >= run.chunk_size:
                unlink(doomed[:run.chunk_size])
                del doomed[:run.chunk_size]
            progress.update(succeeded=len(keys))
            counts["keys_scanned"] += len(keys)
        unlink(doomed)
    finally:
        cache.close()
    orphans = []
    if pointer and not kept_per_week.get(pointer):
        orphans.append(f"{pointer_key} = {pointer}: no {pointer} keys in the cache (rerun weekly_recs for that week)")
        log.warning("orphaned pointer: %s", orphans[-1])
    return {"week_keys_deleted": counts["week_keys_deleted"], "ttl_set": counts["ttl_set"],
            "orphaned_pointers": len(orphans), "keys_scanned": counts["keys_scanned"],
            "expired_weeks": sorted(expired_weeks), "weeks_kept": dict(sorted(kept_per_week.items())),
            "orphans": orphans}


def _set_missing_ttls(client, keys: list[tuple[bytes, int]], dry_run: bool) -> int:
    """EXPIRE the keys of `keys` (key, ttl) that have no TTL; two pipelines: read TTLs, set them."""
    if not keys:
        return 0
    pipe = client.pipeline(transaction=False)
    for key, _ in keys:
        pipe.ttl(key)
    missing = [(key, ttl) for (key, ttl), left in zip(keys, pipe.execute()) if left == -1]
    if missing and not dry_run:
        pipe = client.pipeline(transaction=False)
        for key, ttl in missing:
            pipe.expire(key, ttl)
        pipe.execute()
    return len(missing)


# ---------------------------------------------------------------------------------------- SQL
def _expire_rows(run: MaintenanceRun, label: str, days: int, count_sql: str, delete_sql: str) -> int:
    from include.runtime.database import Database

    params = {"before": run.cutoff(days), "batch": run.delete_batch}
    with Database(RESULTS_CONN_ID) as db:
        if run.dry_run:
            expired = int(db.scalar(count_sql, params) or 0)
            log.info("%s: %d rows older than %d days (before %s) would be deleted", label, expired, days,
                     params["before"])
            return expired
        deleted = 0
        while True:
            batch = db.execute(delete_sql, params)
            deleted += batch
            if batch < run.delete_batch:
                break
            log.info("%s: %d rows deleted so far", label, deleted)
    log.info("%s: %d rows older than %d days (before %s) deleted", label, deleted, days, params["before"])
    return deleted


def expire_dead_letters(run: MaintenanceRun) -> dict[str, int]:
    return {"dead_letters_deleted": _expire_rows(run, "dead_letter", run.dead_letter_days,
                                                 "count_expired_dead_letters", "delete_expired_dead_letters")}


def expire_backfill_reports(run: MaintenanceRun) -> dict[str, int]:
    return {"backfill_reports_deleted": _expire_rows(run, "backfill_report", run.backfill_report_days,
                                                     "count_expired_backfill_reports",
                                                     "delete_expired_backfill_reports")}


# ---------------------------------------------------------------------------------------- models
def retain_model_versions(run: MaintenanceRun) -> dict[str, Any]:
    """The training jobs' own retention (ModelStore.retain with their settings), and pointer checks."""
    from include.runtime.model_loaders import CF_MODEL, FAISS_MODEL
    from include.runtime.model_store import ArtifactError, ModelStore

    policies = {  # (keep_last, min_age) as cf_training.publish and faiss_rebuild.publish apply them
        CF_MODEL: (config.get_int("CF_KEEP_VERSIONS"), dt.timedelta(days=config.get_float("CF_KEEP_DAYS"))),
        FAISS_MODEL: (1, dt.timedelta(hours=config.get_float("FAISS_KEEP_HOURS"))),
    }
    removed: dict[str, list[str]] = {}
    orphans = []
    for name, (keep_last, min_age) in policies.items():
        store = ModelStore(name)
        try:
            current = store.current()
        except ArtifactError as exc:  # an unreadable pointer: retention would not know what is live
            orphans.append(f"{name}: {exc}")
            continue
        if current and current not in store.version_ids():
            orphans.append(f"{name}: {store.base}/CURRENT.json names version {current}, which is missing; "
                           "promote an existing version with rollback_to=<version>")
            continue
        removed[name] = store.retain(keep_last, min_age, run.at, dry_run=run.dry_run)
    for orphan in orphans:
        log.warning("orphaned pointer: %s (retention skipped for this model)", orphan)
    return {"model_versions_deleted": sum(len(v) for v in removed.values()), "orphaned_pointers": len(orphans),
            "versions_removed": removed, "orphans": orphans}


def restore_week_keys(run: MaintenanceRun) -> dict[str, Any]:
    """The `restore_week` param's keys rewritten from the backup table (nothing on a dry run)."""
    if run.restore_week is None or run.dry_run:
        return {"week_keys_restored": 0}
    from include.jobs.weekly_recs import restore_week

    restored = restore_week(run.restore_week)
    return {"week_keys_restored": restored["keys_written"], "restored_week": run.restore_week}


# ---------------------------------------------------------------------------------------- summary
def summarize(run: MaintenanceRun, parts: list[dict[str, Any]], started_at: dt.datetime | None) -> dict[str, Any]:
    """Counts per action over the steps, logged and returned; job metrics."""
    now = dt.datetime.now(dt.timezone.utc)
    duration = (now - started_at).total_seconds() if started_at else 0.0
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, int) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            elif isinstance(value, list):
                merged[key] = merged.get(key, []) + value
            else:
                merged[key] = value
    summary = {"run_at": run.run_at, "dry_run": run.dry_run, **{a: merged.get(a, 0) for a in ACTIONS},
               **{k: v for k, v in merged.items() if k not in ACTIONS}, "duration_seconds": round(duration, 1)}
    metrics.check(JOB, "orphaned_pointers", summary["orphaned_pointers"] == 0)
    metrics.job_run(JOB, "success", duration, sum(summary[a] for a in ACTIONS if a != "orphaned_pointers"))
    log_summary("maintenance dry run (nothing changed)" if run.dry_run else "maintenance done", summary)
    return summary

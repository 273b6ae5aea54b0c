"""What popularity, popular_segments and user_affinity share: as_of, the decay settings and the
data-quality gates on the events.

Pre-checks run before any write: the source schema has the columns the SQL reads, the window
holds events and the newest is at most `max_age_hours` older than as_of (freshness), and the
required columns hold no nulls. Post-checks run inside the writing transaction, so a failing
check rolls the new values back and the previous ones stay live. Every check emits
`nightshift.dq.<job>.<check>.<pass|fail>`; a failure raises AirflowFailException (no retry:
the data will not be different a minute later) with what was expected and what came.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from include.runtime import config, metrics

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = {
    "events": {"user_id", "product_id", "event_type", "ts"},
    "Product": {"ID", "Category", "Brand", "Price", "popularity_score"},
    "Client": {"ID", "gender", "age_group", "geo_id"},
}
_FUTURE_TOLERANCE = dt.timedelta(minutes=5)
# Hash aggregates over millions of events: PostgreSQL's default 4MB spills them to disk.
PG_WORK_MEM = "SET LOCAL work_mem = '256MB'"


class DecayWindow:
    """The decayed event window a run settings class shares (fields as_of, half_life_days,
    window_days, weights): its Decay, where the window starts, and the check of both."""

    @property
    def decay(self):
        from include.models.popularity import Decay

        return Decay(self.half_life_days, self.window_days, dict(self.weights))

    @property
    def since(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.window_days)

    def check_decay(self) -> None:
        try:
            self.decay
        except ValueError as exc:
            fail(f"bad decay settings: {exc}")


def raise_work_mem(db, cur) -> None:
    """More sort/hash memory for this transaction on PostgreSQL (SQL Server grants it itself)."""
    if db.dialect == "postgres":
        cur.execute(PG_WORK_MEM)


def fail(message: str, job: str | None = None) -> None:
    """Fail the run without retry; with `job`, count it as a failed run of that job first."""
    from airflow.sdk.exceptions import AirflowFailException

    if job:
        metrics.job_run(job, "failed", 0.0, 0)
    raise AirflowFailException(message)


def resolve_as_of(raw: str | None, run_after: dt.datetime, now: dt.datetime) -> dt.datetime:
    """as_of as naive UTC (the tables hold naive UTC timestamps): the param (ISO date or date-time,
    naive = UTC) or the run's time; never in the future."""
    if raw:
        try:
            value = dt.datetime.fromisoformat(raw)
        except ValueError:
            fail(f"as_of must be an ISO date or date-time such as 2024-12-29T23:00:00, got {raw!r}")
    else:
        value = run_after
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    value = value.replace(microsecond=0)
    now = now.astimezone(dt.timezone.utc).replace(tzinfo=None) if now.tzinfo else now
    if value > now + _FUTURE_TOLERANCE:
        fail(f"as_of {value.isoformat()} is in the future (now is {now.isoformat(timespec='seconds')}); "
             "scores can only be computed from events that happened")
    return value


def pick(params: dict[str, Any], name: str, setting: str, kind=float):
    """A DAG param when given, else the setting (Variable > environment > default)."""
    value = params.get(name)
    return kind(value) if value is not None else kind(config.get(setting))


def weights_from(params: dict[str, Any]) -> dict[str, float]:
    return {"purchase": pick(params, "weight_purchase", "POPULARITY_WEIGHT_PURCHASE"),
            "add_to_cart": pick(params, "weight_add_to_cart", "POPULARITY_WEIGHT_ADD_TO_CART"),
            "view": pick(params, "weight_view", "POPULARITY_WEIGHT_VIEW")}


def check_schema(db, job: str) -> None:
    """Fail when a source table lacks a column the job's SQL reads."""
    columns = db.frame("source_columns")
    found: dict[str, set[str]] = {}
    for table, column in zip(columns["table_name"], columns["column_name"]):
        found.setdefault(str(table), set()).add(str(column))
    missing = {t: sorted(c - found.get(t, set())) for t, c in REQUIRED_COLUMNS.items() if c - found.get(t, set())}
    metrics.check(job, "schema", not missing)
    if missing:
        fail(f"source schema check failed: missing columns {missing} in connection source_db; expected "
             f"{ {t: sorted(c) for t, c in REQUIRED_COLUMNS.items()} }. Run the migrations or fix the source.", job)


def check_events(db, job: str, as_of: dt.datetime, since: dt.datetime, max_age_hours: float) -> dict[str, Any]:
    """Freshness and completeness of the events in (since, as_of]; their stats when they pass."""
    row = db.frame("events_quality", {"since": since, "as_of": as_of}).iloc[0]
    events = int(row["events"] or 0)
    last = row["last_event"]
    last = None if last is None or last != last else last.to_pydatetime() if hasattr(last, "to_pydatetime") else last
    age_hours = (as_of - last).total_seconds() / 3600.0 if last is not None else None
    nulls = {c: int(row[f"null_{c}"] or 0) for c in ("user_id", "product_id", "event_type")}
    stats = {"events_in_window": events, "last_event": last.isoformat() if last else None,
             "event_age_hours": None if age_hours is None else round(age_hours, 2),
             "unknown_event_types": int(row["unknown_event_type"] or 0), **{f"null_{k}": v for k, v in nulls.items()}}
    fresh = age_hours is not None and age_hours <= max_age_hours
    metrics.check(job, "freshness", fresh)
    if age_hours is not None:
        metrics.quality(job, "data_freshness_seconds", age_hours * 3600.0)
    if not fresh:
        seen = f"the newest is from {last.isoformat()} ({age_hours:.1f} h old)" if last else "there are none"
        fail(f"events are stale: expected an event within {max_age_hours:g} h before as_of {as_of.isoformat()}, "
             f"but {seen} in the window since {since.isoformat()}. The previous values stay live; check the "
             "event feed, or pass an earlier as_of / a larger freshness_hours.", job)
    complete = not any(nulls.values())
    metrics.check(job, "completeness", complete)
    if not complete:
        fail(f"events in the window have nulls in required columns: {nulls}; expected none. "
             "The previous values stay live; fix the event feed.", job)
    if stats["unknown_event_types"]:
        log.warning("%d events of unknown types in the window are ignored (scored types: purchase, "
                    "add_to_cart, view)", stats["unknown_event_types"])
    metrics.quality(job, "unknown_event_types", stats["unknown_event_types"])
    return stats

"""Operational health of the batch outputs, for a person or a monitor: `python -m scripts.health`.

Answers the seeds' questions from what the API serves (Redis) and the jobs' state:
- week_key: is `recs:current_week` set, and to the current ISO week?
- week_customers: how many `{week}:{customer_id}` keys are cached for it, against the run's count?
- metadata_age:<job>: how old is each job's last-run metadata (its own key, else the job state
  Variable that include/runtime/metrics.py keeps), against a limit derived from its schedule?
- forecast_failures: does `forecast:metadata:last_run` show failed products (above 5%: critical)?
- consecutive_failures:<job>: how many runs in a row failed (3 or more: critical)?

Job state (last success, consecutive failures) comes from the JOB_STATE_KEY Airflow Variables that
include/runtime/metrics.py keeps: run it where Airflow's metadata DB is configured (AIRFLOW_HOME /
AIRFLOW__DATABASE__SQL_ALCHEMY_CONN), e.g. in the scheduler's container.

Exit code (Nagios/Icinga convention, usable by any monitor): 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN: a check it could not perform (Redis unreachable or not configured, job state unreadable
because the metadata database is not set up) is UNKNOWN with one line naming what is missing and
the fix, never OK. Airflow's own log output is silenced; `--debug` shows it and the tracebacks. `--json` prints one JSON object; `--emit` also sends the results
as StatsD gauges (nightshift.health.<check>, nightshift.job.<job>.data_age_seconds,
nightshift.quality.weekly_recs.customers_cached) for the Grafana alerts.
Redis comes from the `redis_default` Airflow connection (AIRFLOW_CONN_REDIS_DEFAULT works), or --redis-url.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import traceback
from dataclasses import asdict, dataclass
from typing import Any

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
HOUR = 3600.0
DAY = 24 * HOUR

# job -> (metadata key setting or None, timestamp field, warn after, critical after) in seconds.
# Limits follow the schedules: a daily job is late after a missed run, critical after a week
# (the seed's "forecast metadata older than 8 days"); weekly jobs get 8 / 15 days.
JOBS: dict[str, tuple[str | None, str | None, float, float]] = {
    "weekly_recs": ("RECS_METADATA_KEY", "completed_at", 8 * DAY, 15 * DAY),
    "forecast_worker": ("FORECAST_METADATA_KEY", "last_run", 26 * HOUR, 8 * DAY),
    "order_insights": ("INSIGHTS_METADATA_KEY", "last_run", 26 * HOUR, 3 * DAY),
    "cf_training": ("CF_METADATA_KEY", "completed_at", 2 * DAY, 8 * DAY),
    "faiss_rebuild": ("FAISS_METADATA_KEY", "completed_at", 8 * DAY, 15 * DAY),
    "popularity": (None, None, 30 * 60, 2 * HOUR),
    "popular_segments": (None, None, HOUR, 4 * HOUR),
    "user_affinity": (None, None, 26 * HOUR, 3 * DAY),
}
HEALTH_CHECKS = ("week_key", "week_customers", "forecast_failures", "metadata_age", "consecutive_failures")


class Unreadable(Exception):
    """A check's input cannot be read; the message says what is missing and how to fix it."""


@dataclass
class Result:
    check: str
    status: int
    message: str
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": STATUS[self.status]}


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _parse_time(raw: Any) -> dt.datetime | None:
    if raw in (None, ""):
        return None
    try:
        if isinstance(raw, (int, float)) or str(raw).replace(".", "", 1).isdigit():
            return dt.datetime.fromtimestamp(float(raw), dt.timezone.utc)
        parsed = dt.datetime.fromisoformat(str(raw))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def _get_json(client, key: str) -> Any:
    raw = client.get(key)
    return None if raw is None else json.loads(raw)


def check_week(client, now: dt.datetime, settings, count_keys: bool = True) -> list[Result]:
    pointer_key = settings("RECS_POINTER_KEY")
    raw = client.get(pointer_key)
    week = raw.decode() if isinstance(raw, bytes) else raw
    current, previous = iso_week(now.date()), iso_week(now.date() - dt.timedelta(days=7))
    if not week:
        return [Result("week_key", CRITICAL, f"{pointer_key} is not set: the API has no weekly recommendations")]
    if week == current:
        results = [Result("week_key", OK, f"{pointer_key} = {week} (current week)", week)]
    elif week == previous and now.weekday() == 0 and now.hour < 12:
        results = [Result("week_key", OK, f"{pointer_key} = {week}; this week's run is due Monday 06:00", week)]
    elif week == previous:
        results = [Result("week_key", WARNING, f"{pointer_key} = {week}, not the current week {current}: "
                                               "this week's weekly_recs run did not publish", week)]
    else:
        results = [Result("week_key", CRITICAL, f"{pointer_key} = {week}, more than a week behind {current}", week)]
    if not count_keys:
        return results
    meta = _get_json(client, settings("RECS_METADATA_KEY")) or {}
    expected = meta.get("successful") if meta.get("week") == week else None
    template = settings("RECS_KEY")
    pattern = template.format(week=week, customer_id="*")
    cached = sum(1 for _ in client.scan_iter(match=pattern, count=10_000))
    if cached == 0:
        results.append(Result("week_customers", CRITICAL, f"no {pattern} keys cached for {week}", 0))
    elif expected and cached < 0.95 * expected:
        results.append(Result("week_customers", WARNING, f"{cached} customers cached for {week}, the run wrote "
                                                         f"{expected}: keys expired or evicted", cached))
    else:
        results.append(Result("week_customers", OK, f"{cached} customers cached for {week}"
                                                    + (f" (run wrote {expected})" if expected else ""), cached))
    return results


def check_metadata(client, now: dt.datetime, settings, state) -> list[Result]:
    results = []
    for job, (key_setting, field, warn, crit) in JOBS.items():
        stamp, source = None, None
        if key_setting:
            key = settings(key_setting)
            meta = _get_json(client, key)
            if meta:
                stamp, source = _parse_time(meta.get(field)), key
        if stamp is None:
            job_state = state(job)
            if job_state is None:
                results.append(Result(f"metadata_age:{job}", UNKNOWN, f"{job}: no run metadata in Redis and "
                                                                      "the job state is unreadable (see job_state)"))
                continue
            stamp, source = _parse_time(job_state.get("last_success")), f"job state of {job}"
        if stamp is None:
            results.append(Result(f"metadata_age:{job}", WARNING, f"{job}: no run metadata found (never ran?)"))
            continue
        age = (now - stamp).total_seconds()
        status = CRITICAL if age > crit else WARNING if age > warn else OK
        results.append(Result(f"metadata_age:{job}", status,
                              f"{job}: last run {age / HOUR:.1f} h ago ({source}; warn > {warn / HOUR:.0f} h, "
                              f"critical > {crit / HOUR:.0f} h)", round(age)))
    return results


def check_forecast(client, settings, max_rate: float) -> Result:
    meta = _get_json(client, settings("FORECAST_METADATA_KEY"))
    if not meta:
        return Result("forecast_failures", WARNING, "forecast:metadata:last_run missing: no forecast run published")
    failed, total = int(meta.get("failed") or 0), int(meta.get("total_products") or 0)
    rate = failed / total if total else 0.0
    if total == 0:
        return Result("forecast_failures", WARNING, "the last forecast run had no products", rate)
    if rate > max_rate:
        return Result("forecast_failures", CRITICAL, f"{failed} of {total} forecasts failed ({rate:.1%} > "
                                                     f"{max_rate:.0%}); see the dead_letter table", rate)
    if failed:
        return Result("forecast_failures", WARNING, f"{failed} of {total} forecasts failed ({rate:.1%})", rate)
    return Result("forecast_failures", OK, f"0 of {total} forecasts failed", rate)


def check_failures(state) -> list[Result]:
    results = []
    for job in JOBS:
        job_state = state(job)
        if job_state is None:
            results.append(Result(f"consecutive_failures:{job}", UNKNOWN,
                                  f"{job}: job state unreadable (see job_state)"))
            continue
        count = int(job_state.get("consecutive_failures") or 0)
        status = CRITICAL if count >= 3 else WARNING if count >= 1 else OK
        results.append(Result(f"consecutive_failures:{job}", status, f"{job}: {count} failed runs in a row", count))
    return results


def metadata_db_problem() -> str | None:
    """Why the job state Variables cannot be read from Airflow's metadata database (None: they can)."""
    url = "(not configured)"
    try:
        from airflow import settings
        from sqlalchemy import inspect

        url = settings.engine.url.render_as_string(hide_password=True)
        if inspect(settings.engine).has_table("variable"):
            return None
        return (f"Airflow metadata database at {url} has no tables: run `airflow db migrate` or point "
                "AIRFLOW_HOME / AIRFLOW__DATABASE__SQL_ALCHEMY_CONN at the scheduler's database")
    except Exception as exc:
        return (f"cannot reach the Airflow metadata database at {url} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}): point AIRFLOW_HOME / "
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN at the scheduler's database")


def job_state_reader():
    """`state(job)` from the JOB_STATE_KEY Airflow Variables (metrics.job_state), and the problem
    (None if none) that makes a state not found there unreadable rather than "never ran"."""
    from include.runtime import metrics

    problem = metadata_db_problem()

    def state(job: str) -> dict:
        value = metrics.job_state(job)  # environment (AIRFLOW_VAR_...) and secrets backends still answer
        if not value and problem:
            raise Unreadable(problem)
        return value

    return state, problem


def run_checks(client, now: dt.datetime | None = None, settings=None, count_keys: bool = True,
               state=None) -> list[Result]:
    """Every check; `client` None: Redis is unreadable, only the job state checks run. `state(job)`
    gives the job state dict (default: job_state_reader(), the JOB_STATE_KEY Airflow Variable), read
    once per job; it raises Unreadable when it cannot tell, and those checks are UNKNOWN."""
    from include.runtime import config

    settings = settings or config.get
    now = now or dt.datetime.now(dt.timezone.utc)
    results: list[Result] = []
    reader, problem = (state, None) if state else job_state_reader()
    cache: dict[str, dict | None] = {}

    def job_state(job: str) -> dict | None:
        if job not in cache:
            try:
                cache[job] = reader(job) or {}
            except Unreadable:
                cache[job] = None
        return cache[job]

    if client is not None:
        results += check_week(client, now, settings, count_keys)
        results += check_metadata(client, now, settings, job_state)
        results.append(check_forecast(client, settings, float(settings("FORECAST_MAX_FAILURE_RATE"))))
    results += check_failures(job_state)
    if None in cache.values():  # one line with the fix; the checks it blocked point at it
        results.insert(0, Result("job_state", UNKNOWN, problem or "job state unreadable"))
    return results


def emit(results: list[Result]) -> None:
    from include.runtime import metrics

    worst: dict[str, int] = {}
    for r in results:  # a check it could not perform sends nothing: its gauge goes stale, not "ok"
        base = r.check.split(":")[0]
        worst[base] = max(worst.get(base, OK), r.status)
        if r.status == UNKNOWN:
            continue
        if base == "metadata_age" and r.value is not None:
            metrics.data_age(r.check.split(":")[1], r.value)
        if r.check == "week_customers" and r.value is not None:
            metrics.quality("weekly_recs", "customers_cached", r.value)
    for base, status in worst.items():
        if base in HEALTH_CHECKS and status != UNKNOWN:
            metrics.health(base, status == OK)


def _client(url: str | None):
    """A pinged Redis client, or Unreadable naming what is missing and the fix."""
    from urllib.parse import parse_qs, urlsplit

    import redis

    from include.runtime.config import REDIS_CONN_ID
    from include.runtime.redis_cache import RedisCache, database

    if url:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 6379}"
        try:
            db = database("--redis-url", parts.path, (parse_qs(parts.query).get("db") or [None])[0])
        except Exception as exc:
            raise Unreadable(str(exc)) from exc
        client, fix = redis.from_url(url), "start Redis or fix --redis-url"
    else:
        from airflow.exceptions import AirflowNotFoundException

        try:
            cache = RedisCache()
            client = cache.client  # pings (with retries) and fails naming the connection
        except AirflowNotFoundException as exc:
            raise Unreadable(f"no Redis connection {REDIS_CONN_ID!r}: set AIRFLOW_CONN_"
                             f"{REDIS_CONN_ID.upper()}=redis://host:6379/<db> or pass --redis-url") from exc
        except Exception as exc:
            raise Unreadable(f"cannot read Redis: {str(exc).splitlines()[0]}") from exc
        return client
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise Unreadable(f"cannot read Redis at {where} db {db}: {type(exc).__name__}: {exc}; {fix}") from exc
    return client


def _quiet(debug: bool) -> None:
    """Airflow logs every failed metadata lookup with a traceback: silence it unless --debug."""
    import airflow  # noqa: F401  (configures Airflow's logging, which would reset levels set earlier)

    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        return
    for name in ("airflow", "sqlalchemy", "include"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.health", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--emit", action="store_true", help="also send the results as StatsD gauges")
    parser.add_argument("--no-count", action="store_true", help="skip counting the week's keys (a SCAN)")
    parser.add_argument("--redis-url", help="redis://host:port/db instead of the redis_default connection")
    parser.add_argument("--debug", action="store_true", help="show Airflow's log output and tracebacks on stderr")
    args = parser.parse_args(argv)
    results: list[Result] = []
    try:  # a monitor must get UNKNOWN with a hint, not a traceback
        _quiet(args.debug)
        try:
            client = _client(args.redis_url)
        except Unreadable as exc:
            if args.debug:
                traceback.print_exc()
            client = None
            results.append(Result("redis", UNKNOWN, str(exc)))
        results += run_checks(client, count_keys=not args.no_count)
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        results.append(Result("health", UNKNOWN, f"health check failed: {type(exc).__name__}: "
                                                 f"{str(exc).splitlines()[0] if str(exc) else ''} (rerun with --debug)"))
    code = max(r.status for r in results)
    if args.emit:
        emit(results)
    if args.json:
        print(json.dumps({"status": STATUS[code], "exit_code": code, "checks": [r.to_dict() for r in results]}))
    else:
        for r in results:
            print(f"{STATUS[r.status]:<9} {r.check:<38} {r.message}")
        print(f"overall: {STATUS[code]}")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Job metrics through Airflow's StatsD client; names get Airflow's `airflow.` prefix.

Names follow BATCH_INFRASTRUCTURE (the templates are in NAMES; deploy/statsd/mapping.yml turns
them into Prometheus series with a job_name label):

- nightshift.job.<job>.runs.<success|failed>   counter, one per run
- nightshift.job.<job>.duration                 timer (ms), every run
- nightshift.job.<job>.records_processed        gauge, every run
- nightshift.job.<job>.last_success / .last_failure   gauge, unix seconds
- nightshift.job.<job>.consecutive_failures     gauge, 0 after a success
- nightshift.job.<job>.data_age_seconds         gauge, age of the job's published output (health command)
- nightshift.job.<job>.deadline_missed          counter, a run still going past its Deadline Alert
- nightshift.dq.<job>.<check>.<pass|fail>        counter per data-quality check
- nightshift.quality.<job>.<name>                gauge (coverage, last_week_hit_rate, failure_rate, ...)
- nightshift.health.<check>                      gauge 1 ok / 0 not (health command: week_key, ...)

Consecutive failures need state across runs. It lives in one Airflow Variable per job,
JOB_STATE_KEY (`nightshift_job_state_{job}`, JSON: consecutive_failures, last_success,
last_failure, last_status, last_run_id, failed_run_id, records, duration_seconds), i.e. in
Airflow's metadata database beside the run history: not in the Redis cache, which may be evicted
or flushed and which the API reads. A failure is counted once per DAG run: the first reporter (a
job's validate calling job_run("failed"), or the on_failure_callback of any task of the run)
records `failed_run_id`; later reporters of the same run emit nothing (two tasks of one run failing
in the same instant could both count: read-modify-write, no lock). A dry run (params.dry_run)
sends its metrics but leaves the state alone. The health command reads the same Variables.
Metrics never fail a job: a StatsD or state error is logged and dropped.
"""
from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "airflow."  # Airflow's [metrics] statsd_prefix default, put before every name below
NAMES = {
    "runs": "nightshift.job.{job}.runs.{status}",
    "duration": "nightshift.job.{job}.duration",
    "records": "nightshift.job.{job}.records_processed",
    "last_success": "nightshift.job.{job}.last_success",
    "last_failure": "nightshift.job.{job}.last_failure",
    "consecutive_failures": "nightshift.job.{job}.consecutive_failures",
    "data_age": "nightshift.job.{job}.data_age_seconds",
    "deadline_missed": "nightshift.job.{job}.deadline_missed",
    "check": "nightshift.dq.{job}.{check}.{result}",
    "quality": "nightshift.quality.{job}.{name}",
    "health": "nightshift.health.{check}",
}


def _stats():
    from airflow.sdk.observability.stats import Stats

    return Stats


def _state_key(job: str) -> str:
    from include.runtime import config

    return config.get("JOB_STATE_KEY").format(job=job)


def _context() -> dict:
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:  # outside a running task (a bench, a script): no run, no state
        return {}


def _current_run_id() -> str | None:
    return _context().get("run_id")


def _keeps_state(run_id: str | None) -> bool:
    """Only a DAG run changes the job state: not a dry run, not a bench or a script (no run id)."""
    params = _context().get("params") or {}
    return run_id is not None and not params.get("dry_run", False)


def _read_state(job: str) -> dict[str, Any]:
    from airflow.sdk import Variable

    return Variable.get(_state_key(job), default=None, deserialize_json=True) or {}


def _write_state(job: str, state: dict[str, Any]) -> None:
    from airflow.sdk import Variable

    Variable.set(_state_key(job), state, serialize_json=True)


def job_run(job: str, status: str, duration_s: float, records: int, consecutive_failures: int | None = None) -> None:
    """One finished run: success resets the consecutive-failure counter, a failure increments it
    (once per DAG run). `consecutive_failures` overrides the Redis counter when a caller knows better."""
    try:
        stats = _stats()
        if status == "success" or duration_s > 0:  # validate reports 0 s: keep it out of the usual duration
            stats.timing(NAMES["duration"].format(job=job), duration_s * 1000.0)
        stats.gauge(NAMES["records"].format(job=job), records)
    except Exception:
        log.warning("could not send run metrics of %s", job, exc_info=True)
    if status == "success":
        _success(job, duration_s, records, consecutive_failures)
    else:
        failure(job, _current_run_id(), records=records, consecutive_failures=consecutive_failures)


def _success(job: str, duration_s: float, records: int, consecutive_failures: int | None) -> None:
    now = time.time()
    if _keeps_state(_current_run_id()):
        try:
            state = _read_state(job)
            state.update({"consecutive_failures": 0, "last_success": now, "last_status": "success",
                          "records": records, "duration_seconds": round(duration_s, 3),
                          "last_run_id": _current_run_id() or ""})
            _write_state(job, state)
        except Exception:
            log.warning("could not reset the failure counter of %s", job, exc_info=True)
    try:
        stats = _stats()
        stats.incr(NAMES["runs"].format(job=job, status="success"))
        stats.gauge(NAMES["last_success"].format(job=job), now)
        stats.gauge(NAMES["consecutive_failures"].format(job=job), consecutive_failures or 0)
    except Exception:
        log.warning("could not send success metrics of %s", job, exc_info=True)


def failure(job: str, run_id: str | None, records: int | None = None,
            consecutive_failures: int | None = None) -> bool:
    """Count a failed run of `job` once per `run_id`; False when this run was already counted."""
    now = time.time()
    count = consecutive_failures
    if _keeps_state(run_id):
        try:
            state = _read_state(job)
            if run_id and state.get("failed_run_id") == run_id:
                return False
            counted = int(state.get("consecutive_failures") or 0) + 1
            state.update({"consecutive_failures": counted, "last_failure": now, "last_status": "failed",
                          "last_run_id": run_id or "", "failed_run_id": run_id or ""})
            if records is not None:
                state["records"] = records
            _write_state(job, state)
            count = counted if consecutive_failures is None else consecutive_failures
        except Exception:
            log.warning("could not count the failure of %s; consecutive_failures not sent", job, exc_info=True)
    try:
        stats = _stats()
        stats.incr(NAMES["runs"].format(job=job, status="failed"))
        stats.gauge(NAMES["last_failure"].format(job=job), now)
        if count is not None:
            stats.gauge(NAMES["consecutive_failures"].format(job=job), count)
    except Exception:
        log.warning("could not send failure metrics of %s", job, exc_info=True)
    return True


def on_failure_callback(context: Any) -> None:
    """Task on_failure_callback (DEFAULT_ARGS): a task failed for good, so its DAG run fails; count
    it once per run. Never raises: a callback error must not hide the task's own error."""
    try:
        dag_run = context.get("dag_run")
        job = getattr(dag_run, "dag_id", None) or context["dag"].dag_id
        run_id = context.get("run_id") or getattr(dag_run, "run_id", None)
        failure(job, run_id)
    except Exception:
        log.warning("on_failure_callback could not record the failure", exc_info=True)


def job_state(job: str) -> dict[str, Any]:
    """The JOB_STATE_KEY Variable of `job` ({} when it never ran), read where a script can: the
    metadata database (Airflow's Variable model, needs AIRFLOW_HOME / the DB settings), else the
    environment (AIRFLOW_VAR_...)."""
    key = _state_key(job)
    try:
        from airflow.models.variable import Variable as StoredVariable

        value = StoredVariable.get(key, default_var=None, deserialize_json=True)
        if value is not None:
            return value
    except Exception:
        log.debug("no metadata database to read %s from", key, exc_info=True)
    from airflow.sdk import Variable

    return Variable.get(key, default=None, deserialize_json=True) or {}


def data_age(job: str, seconds: float) -> None:
    """Age of the job's published output (data freshness); sent by `python -m scripts.health --emit`."""
    try:
        _stats().gauge(NAMES["data_age"].format(job=job), seconds)
    except Exception:
        log.warning("could not send data age of %s", job, exc_info=True)


def deadline_missed(job: str) -> None:
    """A run of `job` passed its Deadline Alert (include/jobs/deadlines.py; sent by the triggerer)."""
    try:
        _stats().incr(NAMES["deadline_missed"].format(job=job))
    except Exception:
        log.warning("could not send deadline_missed of %s", job, exc_info=True)


def health(check_name: str, ok: bool) -> None:
    """One operational check of `python -m scripts.health --emit`: 1 ok, 0 not."""
    try:
        _stats().gauge(NAMES["health"].format(check=check_name), 1 if ok else 0)
    except Exception:
        log.warning("could not send health check %s", check_name, exc_info=True)


def quality(job: str, name: str, value: float) -> None:
    try:
        _stats().gauge(NAMES["quality"].format(job=job, name=name), value)
    except Exception:
        log.warning("could not send quality metric %s of %s", name, job, exc_info=True)


def check(job: str, check_name: str, passed: bool) -> None:
    try:
        _stats().incr(NAMES["check"].format(job=job, check=check_name, result="pass" if passed else "fail"))
    except Exception:
        log.warning("could not send check %s of %s", check_name, job, exc_info=True)

"""Job metrics through Airflow's StatsD client; names get Airflow's `airflow.` prefix.

Names follow BATCH_INFRASTRUCTURE: nightshift.job.<job>.runs.<status>, .duration,
.records_processed, .last_success / .last_failure (unix seconds), .consecutive_failures,
nightshift.dq.<job>.<check>.<result>, and per-job quality gauges nightshift.quality.<job>.<name>.
"""
from __future__ import annotations

import time


def _stats():
    from airflow.sdk.observability.stats import Stats

    return Stats


def job_run(job: str, status: str, duration_s: float, records: int, consecutive_failures: int | None = None) -> None:
    stats = _stats()
    stats.incr(f"nightshift.job.{job}.runs.{status}")
    stats.timing(f"nightshift.job.{job}.duration", duration_s * 1000.0)
    stats.gauge(f"nightshift.job.{job}.records_processed", records)
    stats.gauge(f"nightshift.job.{job}.last_{'success' if status == 'success' else 'failure'}", time.time())
    if consecutive_failures is not None:
        stats.gauge(f"nightshift.job.{job}.consecutive_failures", consecutive_failures)


def quality(job: str, name: str, value: float) -> None:
    _stats().gauge(f"nightshift.quality.{job}.{name}", value)


def check(job: str, check_name: str, passed: bool) -> None:
    _stats().incr(f"nightshift.dq.{job}.{check_name}.{'pass' if passed else 'fail'}")

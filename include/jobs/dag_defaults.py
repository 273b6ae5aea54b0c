"""What every job DAG shares: owner, retries with exponential backoff (1 min growing to 15), and the
failure callback that sends a failed run's metrics."""
from __future__ import annotations

import datetime as dt

import pendulum

from include.runtime.metrics import on_failure_callback

START_DATE = pendulum.datetime(2025, 1, 1, tz="UTC")
DEFAULT_ARGS = {
    "owner": "nightshift",
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=15),
    # a task that fails for good fails its run: count it (runs.failed, last_failure, consecutive_failures)
    "on_failure_callback": on_failure_callback,
}


def run_date(context) -> dt.date:
    """The date a run stands for: when it was due to run (also set for manual triggers)."""
    return context["dag_run"].run_after.date()

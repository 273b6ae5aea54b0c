"""What every job DAG shares: owner, retries after 1, 5 and 15 minutes (one retry for the long model
jobs), and the failure callback that sends a failed run's metrics."""
from __future__ import annotations

import datetime as dt

import pendulum

from include.jobs.retry_policy import RETRY_DELAYS, ScheduledRetryPolicy
from include.runtime.metrics import on_failure_callback

START_DATE = pendulum.datetime(2025, 1, 1, tz="UTC")
DEFAULT_ARGS = {
    "owner": "nightshift",
    "retries": len(RETRY_DELAYS),
    "retry_policy": ScheduledRetryPolicy(RETRY_DELAYS),
    # A task the runner never saw fail (worker killed, heartbeat lost) is retried by the scheduler
    # without the policy: backoff x5 capped at 15 min gives 1-2, 5-10 and 15 minutes.
    "retry_delay": RETRY_DELAYS[0],
    "retry_exponential_backoff": 5.0,
    "max_retry_delay": RETRY_DELAYS[-1],
    # a task that fails for good fails its run: count it (runs.failed, last_failure, consecutive_failures)
    "on_failure_callback": on_failure_callback,
}
# cf_training and faiss_rebuild run for hours: a second failure waits for the next schedule.
LONG_JOB_ARGS = {**DEFAULT_ARGS, "retries": 1}


def run_date(context) -> dt.date:
    """The date a run stands for: when it was due to run (also set for manual triggers)."""
    return context["dag_run"].run_after.date()

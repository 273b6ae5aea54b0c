"""What every job DAG shares: owner, retries with exponential backoff (1 min growing to 15)."""
from __future__ import annotations

import datetime as dt

import pendulum

START_DATE = pendulum.datetime(2025, 1, 1, tz="UTC")
DEFAULT_ARGS = {
    "owner": "nightshift",
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=15),
}


def run_date(context) -> dt.date:
    """The date a run stands for: when it was due to run (also set for manual triggers)."""
    return context["dag_run"].run_after.date()

"""Deadline Alerts (Airflow 3.1+, experimental in 3.3) for the long DAGs: a run still going
`interval` after it was queued sends `nightshift.job.<job>.deadline_missed` and logs a warning.

The StatsD duration alert only sees a run once it ends; a deadline sees a run that hangs. The
callback is an AsyncCallback, so the triggerer runs it (a triggerer must run, with the project
root on PYTHONPATH, and be restarted after this module changes). This module imports only
airflow.sdk at top level: DAG files import it at parse time.

Left off under `airflow dags test` only: in Airflow 3.3.2 `dags test` of a DAG with a
DeadlineAlert fails when the run succeeds (DagRun.update_state hands the unserialized alert to
DeadlineAlert.get_by_id: "'dict' object has no attribute 'hex'"). Under the scheduler the alert
is attached; tests/e2e checks both the job DAGs and a probe whose deadline passes.
"""
from __future__ import annotations

import datetime as dt
import logging
import sys

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

log = logging.getLogger(__name__)

# How long after being queued each long job should be done: about twice a normal run at the
# seeds' scale (weekly_recs ~1-2 h for 1M customers, forecast_worker ~1 h for 100K products).
INTERVALS = {
    "weekly_recs": dt.timedelta(hours=4),
    "forecast_worker": dt.timedelta(hours=3),
}


async def deadline_missed(job: str, **kwargs) -> None:
    """Runs in the triggerer when a run of `job` missed its deadline. Never raises."""
    try:
        from include.runtime import metrics

        metrics.deadline_missed(job)
        context = kwargs.get("context") or {}
        dag_run = context.get("dag_run") or {}
        run_id = (dag_run.get("dag_run_id") or dag_run.get("run_id")) if isinstance(dag_run, dict) \
            else getattr(dag_run, "run_id", None)
        log.warning("%s run %s is past its deadline (%s)", job, run_id, (context.get("deadline") or {}))
    except Exception:
        log.warning("deadline callback of %s failed", job, exc_info=True)


def long_run_deadline(job: str, interval: dt.timedelta | None = None) -> DeadlineAlert:
    """The DeadlineAlert for `job`'s DAG: queued time + INTERVALS[job]."""
    return DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=interval or INTERVALS[job],
                         callback=AsyncCallback(deadline_missed, kwargs={"job": job}))


def job_deadline(job: str) -> DeadlineAlert | None:
    """`job`'s DeadlineAlert for its DAG's `deadline`, None inside `airflow dags test` (see above)."""
    if sys.argv[1:3] == ["dags", "test"]:  # `airflow dags test` and `python -m airflow dags test`
        return None
    return long_run_deadline(job)

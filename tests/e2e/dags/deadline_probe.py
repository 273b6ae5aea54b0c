"""
### deadline_probe
Test-only DAG (tests/e2e): one task that outlives a 2-second Deadline Alert, so the triggerer
runs include.jobs.deadlines.deadline_missed.
"""
from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from include.jobs.deadlines import long_run_deadline


@dag(schedule=None, start_date=dt.datetime(2025, 1, 1), catchup=False, tags=["test"], doc_md=__doc__,
     deadline=long_run_deadline("deadline_probe", dt.timedelta(seconds=2)))
def deadline_probe():
    @task
    def wait():
        import time

        time.sleep(25)

    wait()


deadline_probe()

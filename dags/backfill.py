"""
### backfill
Re-run one job for a range of past dates, for every entity or only some. Triggered by hand (or by
the dead-letter re-drive); no schedule.

Conf: `job`, `start_date`, `end_date` (YYYY-MM-DD, at most BACKFILL_MAX_DAYS = 92 days, not in the
future), `product_ids` (forecast_worker) or `user_ids` (weekly_recs, order_insights, user_affinity)
to recompute only those entities (ids that exist in Product / Client), `features` (user_affinity:
`affinity` and/or `profiles`), `dry_run`. `check_conf` rejects a bad conf with one message before
any write; `dates` lists the as_of dates (weekly_recs: one per ISO week); each mapped `backfill`
runs the job's own steps for one as_of, deletes the keys it rewrites for the given entities first,
re-runs failed entities one by one and returns a report row; `report` writes one backfill_report
row per date and returns the totals; `check_outcome` fails the run when a date failed or was
partial. A backfill never moves recs:current_week, the run metadata keys or the user_affinity
watermark back to an older date. Details: include/jobs/backfill.py.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.backfill import FEATURES, JOBS, MAX_IDS
from include.jobs.dag_defaults import DEFAULT_ARGS, START_DATE
from include.runtime.config import SOURCE_POOL


def _ids(applies_to: str) -> Param:
    return Param(None, type=["null", "array"], items={"type": "integer", "minimum": 1}, maxItems=MAX_IDS,
                 description=f"Only these ids (at most {MAX_IDS}); {applies_to}; empty: every entity.")


@dag(
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nightshift", "backfill", "operations"],
    doc_md=__doc__,
    params={
        "job": Param(None, type="string", enum=list(JOBS), description="The job to re-run."),
        "start_date": Param(None, type="string", format="date", description="First as_of date (YYYY-MM-DD)."),
        "end_date": Param(None, type="string", format="date",
                          description="Last as_of date (YYYY-MM-DD), not in the future; at most "
                                      "BACKFILL_MAX_DAYS (92) days after start_date."),
        "product_ids": _ids("forecast_worker only"),
        "user_ids": _ids("weekly_recs, order_insights and user_affinity only"),
        "features": Param(None, type=["null", "array"], minItems=1, uniqueItems=True,
                          items={"type": "string", "enum": sorted({f for fs in FEATURES.values() for f in fs})},
                          description="Sub-steps of a feature job: user_affinity affinity and/or profiles; "
                                      "empty: all."),
        "dry_run": Param(False, type="boolean", description="Compute and report, write nothing."),
    },
)
def backfill():
    @task(pool=SOURCE_POOL)
    def check_conf(**context) -> dict:
        import datetime as dt

        from include.jobs.backfill import check_conf

        today = dt.datetime.now(dt.timezone.utc).date()
        return check_conf(context["params"], today, context["run_id"]).to_dict()

    @task
    def dates(run: dict) -> list[dict]:
        from include.jobs import backfill as job

        return job.dates(job.BackfillRun.from_dict(run))

    @task(pool=SOURCE_POOL, max_active_tis_per_dagrun=1)
    def backfill_date(item: dict, run: dict, **context) -> dict:
        from include.jobs import backfill as job

        ti = context["ti"]
        return job.backfill_date(job.BackfillRun.from_dict(run), item, context["run_id"],
                                 final_try=ti.try_number > ti.max_tries)

    @task
    def report(run: dict, rows: list[dict], **context) -> dict:
        from include.jobs import backfill as job

        return job.report(job.BackfillRun.from_dict(run), list(rows), context["run_id"],
                          context["dag_run"].start_date)

    @task
    def check_outcome(summary: dict) -> None:
        from include.jobs import backfill as job

        job.check_outcome(summary)

    run = check_conf()
    rows = backfill_date.partial(run=run).expand(item=dates(run))
    check_outcome(report(run, rows))


backfill()

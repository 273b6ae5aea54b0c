"""
### backfill
Re-run one job for a range of past dates, for every entity or only some, through the job's own
DAG. Triggered by hand (or by the dead-letter re-drive); no schedule.

Conf: `job`, `start_date`, `end_date` (YYYY-MM-DD, at most BACKFILL_MAX_DAYS = 92 days, not in the
future), `product_ids` (forecast_worker) or `user_ids` (weekly_recs, order_insights, user_affinity)
to recompute only those entities (ids that exist in Product / Client), `features` (user_affinity:
`affinity` and/or `profiles`), `dry_run`. `check_conf` rejects a bad conf with one message before
anything runs; `job_runs` lists the dates (weekly_recs: one per ISO week); each mapped `run_job`
triggers the job's DAG with that date's conf (run id `backfill__<this run>__<as_of>`) and waits
for it, one date at a time, oldest first, so the job's per-shard retries, validation and staged
publication apply unchanged and a live key is only replaced by a validated value. `report` writes
one backfill_report row per date from each job run's state and summary; `check_outcome` fails
the run when a date failed. The jobs never move recs:current_week or the run metadata keys back
to an older date; user_affinity's watermark follows its tables. Details: include/jobs/backfill.py.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task
from nightshift_backfill import BackfillJobRunOperator

from include.jobs.backfill import BACKFILL_POKE_SECONDS, FEATURES, JOBS, MAX_IDS
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
    def job_runs(run: dict, **context) -> list[dict]:
        from include.jobs import backfill as job

        return job.job_runs(job.BackfillRun.from_dict(run), context["run_id"])

    @task(trigger_rule="none_failed")  # after every date's run ended, or was skipped by a dry run
    def report(run: dict, items: list[dict], **context) -> dict:
        from include.jobs import backfill as job

        settings, ti = job.BackfillRun.from_dict(run), context["ti"]

        def state_of(run_id: str) -> str | None:
            try:
                state = ti.get_dagrun_state(settings.job, run_id)
            except Exception:  # noqa: BLE001 - no such run: the date was never triggered
                return None
            return str(getattr(state, "value", state))

        def summary_of(task_id: str, run_id: str) -> dict | None:
            return ti.xcom_pull(task_ids=task_id, dag_id=settings.job, run_id=run_id)

        rows = job.collect(settings, list(items), state_of, summary_of)
        return job.report(settings, rows, context["run_id"], context["dag_run"].start_date)

    @task
    def check_outcome(summary: dict) -> None:
        from include.jobs import backfill as job

        job.check_outcome(summary)

    run = check_conf()
    items = job_runs(run)
    # one date at a time, oldest first; the job's own tasks take the pool slots, not this wait
    waits = BackfillJobRunOperator.partial(task_id="run_job", run=run, retries=0, max_active_tis_per_dagrun=1,
                                           poke_interval=BACKFILL_POKE_SECONDS).expand(item=items)
    summary = report(run, items)
    waits >> summary
    check_outcome(summary)


backfill()

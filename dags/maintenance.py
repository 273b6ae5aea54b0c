"""
### maintenance
Every 6 hours: remove what the TTLs and the jobs' own retention miss, and report broken pointers.

- `restore_week_keys` (only when triggered with `restore_week`, e.g. `{"restore_week": "2025-W46"}`):
  rewrites that week's `{week}:{customer_id}` keys from WeeklyRecommendation, with the values and
  expiry publish gave them (Redis lost data); `python -m scripts.restore` does the same.
- `expire_redis_keys`: one SCAN pass over Redis in chunks. `{week}:{customer_id}` keys of weeks more
  than `keep_weeks` before `recs:current_week` (or the run date's week, whichever is earlier) are
  unlinked; keys of the jobs' templates that lost their TTL get it back (RECS_TTL, FORECAST_CACHE_TTL,
  INSIGHTS_TTL, ...); `recs:current_week` naming a week with no keys is reported as an orphaned pointer.
- `expire_dead_letters`: `dead_letter` rows older than `dead_letter_retention_days` (30).
- `expire_backfill_reports`: `backfill_report` rows older than `backfill_report_retention_days` (90).
- `retain_model_versions`: the model stores' retention as cf_training / faiss_rebuild apply it
  (CF_KEEP_VERSIONS, CF_KEEP_DAYS, FAISS_KEEP_HOURS); a pointer at a missing version is reported.
- `summarize`: counts per action in the log and the return value, job metrics
  (`nightshift.job.maintenance.*`, `nightshift.dq.maintenance.orphaned_pointers.<pass|fail>`).

`dry_run` counts what would go and changes nothing. Every step is idempotent: a retry or a rerun
deletes only what is still there.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    schedule="0 */6 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nightshift", "maintenance"],
    doc_md=__doc__,
    params={
        "keep_weeks": Param(None, type=["null", "integer"], minimum=0, maximum=520,
                            description="Week keys kept this many weeks behind recs:current_week; "
                                        "empty: MAINTENANCE_KEEP_WEEKS (2)."),
        "dead_letter_retention_days": Param(None, type=["null", "integer"], minimum=1,
                                            description="Dead letters kept this many days; "
                                                        "empty: DEAD_LETTER_RETENTION_DAYS (30)."),
        "backfill_report_retention_days": Param(None, type=["null", "integer"], minimum=1,
                                                description="Backfill reports kept this many days; "
                                                            "empty: BACKFILL_REPORT_RETENTION_DAYS (90)."),
        "restore_week": Param(None, type=["null", "string"], pattern=r"^\d{4}-W\d{2}$",
                              description="Rewrite this ISO week's recommendation keys from WeeklyRecommendation "
                                          "(after Redis lost data), e.g. 2025-W46; empty: no restore."),
        "dry_run": Param(False, type="boolean", description="Count what would be removed, change nothing."),
    },
)
def maintenance():
    @task
    def resolve_settings(**context) -> dict:
        from include.jobs.maintenance import MaintenanceRun

        return MaintenanceRun.from_params(context["params"], context["dag_run"].run_after).to_dict()

    @task
    def restore_week_keys(run: dict) -> dict:
        from include.jobs import maintenance as job

        return job.restore_week_keys(job.MaintenanceRun.from_dict(run))

    @task
    def expire_redis_keys(run: dict, restored: dict) -> dict:
        from include.jobs import maintenance as job

        return job.expire_redis_keys(job.MaintenanceRun.from_dict(run))

    @task
    def expire_dead_letters(run: dict) -> dict:
        from include.jobs import maintenance as job

        return job.expire_dead_letters(job.MaintenanceRun.from_dict(run))

    @task
    def expire_backfill_reports(run: dict) -> dict:
        from include.jobs import maintenance as job

        return job.expire_backfill_reports(job.MaintenanceRun.from_dict(run))

    @task
    def retain_model_versions(run: dict) -> dict:
        from include.jobs import maintenance as job

        return job.retain_model_versions(job.MaintenanceRun.from_dict(run))

    @task
    def summarize(run: dict, parts: list[dict], **context) -> dict:
        from include.jobs import maintenance as job

        return job.summarize(job.MaintenanceRun.from_dict(run), list(parts), context["dag_run"].start_date)

    run = resolve_settings()
    restored = restore_week_keys(run)
    summarize(run, [restored, expire_redis_keys(run, restored), expire_dead_letters(run), expire_backfill_reports(run),
                    retain_model_versions(run)])


maintenance()

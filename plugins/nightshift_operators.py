"""Thin operators over include/jobs: templated arguments in, one job call in `execute`."""
from __future__ import annotations

from typing import Any, Sequence

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseOperator


class WeeklyRecsShardOperator(BaseOperator):
    """Scores one shard of active customers and stages its rows for the mapped `publish`, which
    writes the Redis keys and WeeklyRecommendation rows once validation passed; a retry replaces
    the shard's staged file whole, so it never duplicates.

    :param run: the run settings from `resolve_settings` (RecsRun as a dict)
    :param shard: a descriptor from `plan`: {"shard": k, "of": n, "max_customer": ...}
    :param prepared: the output of `prepare`, holding `model_dir`
    """

    template_fields: Sequence[str] = ("run", "shard", "prepared")
    ui_color = "#e8f4ea"

    def __init__(self, *, run: Any, shard: Any, prepared: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run, self.shard, self.prepared = run, shard, prepared

    def execute(self, context) -> dict[str, Any]:
        from include.jobs import weekly_recs

        return weekly_recs.process_shard(weekly_recs.RecsRun.from_dict(self.run), self.shard,
                                         self.prepared["model_dir"])


class BackfillJobRunOperator(TriggerDagRunOperator):
    """Triggers one date's run of the backfilled job's own DAG with its conf and waits for it; on a
    dry run it only logs the conf. Fails when the job run fails (the report still reads it).

    :param run: the checked backfill conf from `check_conf` (BackfillRun as a dict)
    :param item: one descriptor from `job_runs`: {"as_of", "week"?, "run_id"}
    """

    template_fields: Sequence[str] = (*TriggerDagRunOperator.template_fields, "run", "item")

    def __init__(self, *, run: Any, item: Any, **kwargs) -> None:
        super().__init__(trigger_dag_id="{{ params.job }}", wait_for_completion=True, logical_date=None,
                         allowed_states=["success"], failed_states=["failed"], **kwargs)
        self.run, self.item = run, item

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException

        from include.jobs import backfill

        run = backfill.BackfillRun.from_dict(self.run)
        self.trigger_dag_id, self.trigger_run_id = run.job, self.item["run_id"]
        self.conf = backfill.job_conf(run, self.item)
        if run.dry_run:
            self.log.info("dry run: would trigger %s run %s with conf %s", run.job, self.trigger_run_id, self.conf)
            raise AirflowSkipException("dry run")
        return super().execute(context)

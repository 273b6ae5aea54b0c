"""The backfill's operator, apart from the job operators: TriggerDagRunOperator's import costs a
DAG file about 0.2 s to parse, which only the backfill DAG should pay."""
from __future__ import annotations

from typing import Any, Sequence

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator


class BackfillJobRunOperator(TriggerDagRunOperator):
    """Triggers one date's run of the backfilled job's own DAG with its conf and waits until it ends,
    whatever its state (the backfill's `report` reads the state and fails the backfill after it);
    on a dry run it only logs the conf and skips.

    :param run: the checked backfill conf from `check_conf` (BackfillRun as a dict)
    :param item: one descriptor from `job_runs`: {"as_of", "week"?, "run_id"}
    """

    template_fields: Sequence[str] = (*TriggerDagRunOperator.template_fields, "run", "item")

    def __init__(self, *, run: Any, item: Any, **kwargs) -> None:
        super().__init__(trigger_dag_id="{{ params.job }}", wait_for_completion=True, logical_date=None,
                         allowed_states=["success", "failed"], failed_states=[], **kwargs)
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

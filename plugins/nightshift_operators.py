"""Thin operators over include/jobs: templated arguments in, one job call in `execute`."""
from __future__ import annotations

from typing import Any, Sequence

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


"""
### popular_segments
MySanta's popular items per customer segment and category, every 15 minutes.

The popularity score (same weights, decay and window as the `popularity` DAG) summed over the
events of each gender, age_group and geo_id segment in one GROUPING SETS query; the top `top_n`
products of each segment and category go to the popular_items table (replaced in one
transaction) and to Redis sorted sets `popular:segment:{segment_type}:{segment_value}:{category}`
(TTL 900). `check_inputs` stops the run before any write on stale or incomplete events; a failed
post-check writes nothing, so the previous lists stay live until their TTL.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.assets import EVENTS, POPULAR_SEGMENTS
from include.jobs.dag_defaults import DEFAULT_ARGS, START_DATE
from include.jobs.event_params import score_params
from include.runtime.config import SOURCE_POOL


@dag(
    schedule="*/15 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nightshift", "popularity", "mysanta"],
    doc_md=__doc__,
    params={
        **score_params(),
        "top_n": Param(None, type=["null", "integer"], minimum=1, maximum=1000,
                       description="Products per segment and category; empty: POPULAR_SEGMENT_TOP_N (20)."),
        "ttl": Param(None, type=["null", "integer"], minimum=60,
                     description="TTL of the segment keys in seconds; empty: POPULAR_SEGMENT_TTL (900)."),
    },
)
def popular_segments():
    @task
    def resolve_settings(**context) -> dict:
        import datetime as dt

        from include.jobs.popularity import PopularityRun

        return PopularityRun.from_params(context["params"], context["dag_run"].run_after,
                                         dt.datetime.now(dt.timezone.utc), segments=True).to_dict()

    @task(pool=SOURCE_POOL, inlets=[EVENTS])
    def check_inputs(run: dict) -> dict:
        from include.jobs import popularity as job

        return job.check_inputs(job.PopularityRun.from_dict(run), job.SEGMENTS_JOB)

    @task(pool=SOURCE_POOL, outlets=[POPULAR_SEGMENTS])
    def refresh(run: dict, input_stats: dict, **context) -> dict:
        from include.jobs import popularity as job

        return job.refresh_segments(job.PopularityRun.from_dict(run), input_stats)

    run = resolve_settings()
    refresh(run, check_inputs(run))


popular_segments()

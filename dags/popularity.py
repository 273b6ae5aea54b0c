"""
### popularity
Popularity score of every product from the last 90 days of events, every 5 minutes.

`check_inputs` stops the run before any write when the events are stale (newest older than
`freshness_hours` before as_of), have nulls in required columns, or the source schema lacks a
column. `score` updates "Product".popularity_score in one set-based statement, weights
purchase=3, add_to_cart=2, view=1 times 0.5^(age / half_life), and checks the result (counts,
ranges, no NaN) in the same transaction: a failed statement or check rolls back and the previous
scores stay live. `publish` replaces the Redis sorted sets `popular:global` and
`popular:category:{category}` (top `top_n`, TTL 900), each atomically, and emits the
`nightshift.popularity` asset. Empty params fall back to the Variables / environment settings
(POPULARITY_HALF_LIFE_DAYS, POPULARITY_WINDOW_DAYS, POPULARITY_WEIGHT_*, EVENTS_MAX_AGE_HOURS, ...).
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.assets import EVENTS, POPULARITY
from include.jobs.dag_defaults import DEFAULT_ARGS, START_DATE
from include.jobs.event_params import score_params
from include.runtime.config import SOURCE_POOL



@dag(
    schedule="*/5 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nightshift", "popularity", "mysanta"],
    doc_md=__doc__,
    params={
        **score_params(),
        "top_n": Param(None, type=["null", "integer"], minimum=1, maximum=10000,
                       description="Products per Redis sorted set; empty: POPULARITY_TOP_N (100)."),
        "ttl": Param(None, type=["null", "integer"], minimum=60,
                     description="TTL of the popular:* keys in seconds; empty: POPULARITY_TTL (900)."),
    },
)
def popularity():
    @task
    def resolve_settings(**context) -> dict:
        import datetime as dt

        from include.jobs.popularity import PopularityRun

        return PopularityRun.from_params(context["params"], context["dag_run"].run_after,
                                         dt.datetime.now(dt.timezone.utc)).to_dict()

    @task(pool=SOURCE_POOL, inlets=[EVENTS])
    def check_inputs(run: dict) -> dict:
        from include.jobs import popularity as job

        return job.check_inputs(job.PopularityRun.from_dict(run))

    @task(pool=SOURCE_POOL)
    def score(run: dict, input_stats: dict) -> dict:
        from include.jobs import popularity as job

        return job.score(job.PopularityRun.from_dict(run), input_stats)

    @task(outlets=[POPULARITY])
    def publish(run: dict, stats: dict, **context) -> dict:
        from include.jobs import popularity as job

        return job.publish(job.PopularityRun.from_dict(run), stats, context["dag_run"].start_date)

    run = resolve_settings()
    publish(run, score(run, check_inputs(run)))


popularity()

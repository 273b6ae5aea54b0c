"""
### user_affinity
Per user and category the decayed interaction strength in [0, 1], and MySanta user profiles, daily.

Redis `affinity:user:{id}` (hash category -> affinity, 1 = the user's strongest category) and the
tables user_category_affinity and user_profiles (preferred categories and brands, average price,
interaction count). Incremental: only users with events since the last successful as_of (the
watermark), or whose events left the window, are recomputed; `full_rebuild` recomputes everyone
(run it after changing the decay settings, or weekly to pick up late events).

`check_inputs` stops the run before any write on stale or incomplete events; `compute` writes
both tables and runs the post-checks (ranges, normalisation, counts, no NaN) in one transaction,
so a failed check keeps the previous values; `publish` rewrites the Redis hashes (each user's
atomically) and moves the watermark. `user_ids` and/or `features` (a backfill's conf) recompute
only those users or tables and leave the watermark where it is. Scheduled by cron, not on the `nightshift.popularity` asset (which updates every 5
minutes; see include/jobs/assets.py); emits `nightshift.user_affinity` for cf_training.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.assets import EVENTS, POPULARITY, USER_AFFINITY
from include.jobs.dag_defaults import DEFAULT_ARGS, START_DATE
from include.jobs.event_params import score_params
from include.runtime.config import SOURCE_POOL


@dag(
    schedule="30 2 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nightshift", "affinity", "mysanta"],
    doc_md=__doc__,
    params={
        **score_params("AFFINITY_HALF_LIFE_DAYS (30)", "AFFINITY_WINDOW_DAYS (180)"),
        "full_rebuild": Param(False, type="boolean",
                              description="Recompute every user, not only those with new or expired events."),
        "top_n": Param(None, type=["null", "integer"], minimum=1, maximum=50,
                       description="Preferred categories and brands per profile; empty: PROFILE_TOP_N (3)."),
        "ttl": Param(None, type=["null", "integer"], minimum=0,
                     description="TTL of the affinity hashes in seconds, 0 = none; empty: AFFINITY_TTL (0). "
                                 "Incremental runs rewrite changed users only, so a TTL shorter than the time "
                                 "between full rebuilds drops unchanged users."),
        "user_ids": Param(None, type=["null", "array"], items={"type": "integer", "minimum": 1},
                          maxItems=10000, uniqueItems=True,
                          description="Recompute exactly these users (at most 10,000); empty: the changed users. "
                                      "The watermark does not move."),
        "features": Param(None, type=["null", "array"], items={"type": "string", "enum": ["affinity", "profiles"]},
                          minItems=1, uniqueItems=True,
                          description="Recompute only these: affinity (user_category_affinity and the Redis "
                                      "hashes), profiles (user_profiles); empty: both. With a subset the "
                                      "watermark does not move."),
    },
)
def user_affinity():
    @task(pool=SOURCE_POOL)
    def resolve_settings(**context) -> dict:
        import datetime as dt

        from include.jobs import user_affinity as job

        return job.AffinityRun.from_params(context["params"], context["dag_run"].run_after,
                                           dt.datetime.now(dt.timezone.utc), job.read_watermark(),
                                           context["dag_run"].run_id).to_dict()

    @task(pool=SOURCE_POOL, inlets=[EVENTS, POPULARITY])
    def check_inputs(run: dict) -> dict:
        from include.jobs import user_affinity as job

        return job.check_inputs(job.AffinityRun.from_dict(run))

    @task(pool=SOURCE_POOL)
    def compute(run: dict, input_stats: dict, **context) -> dict:
        from include.jobs import user_affinity as job

        params = context["params"]
        return job.compute(job.AffinityRun.from_dict(run), input_stats, user_ids=params.get("user_ids"),
                           features=params.get("features"))

    @task(outlets=[USER_AFFINITY])
    def publish(run: dict, stats: dict, **context) -> dict:
        from include.jobs import user_affinity as job

        return job.publish(job.AffinityRun.from_dict(run), stats, context["dag_run"].start_date)

    run = resolve_settings()
    publish(run, compute(run, check_inputs(run)))


user_affinity()

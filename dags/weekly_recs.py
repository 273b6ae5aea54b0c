"""
### weekly_recs
Top-n product recommendations for every active customer, Mondays at 06:00.

Active: an order in the last RECS_ACTIVE_DAYS (90) days before `as_of_date`, IsActive = 1,
IsBlocked = 0, Deleted = 0. `plan` cuts them into `shard_count` shards; `prepare` fits the
recommender's global state once (co-purchases, popularity, trends); each mapped `process`
reads its shard's history 5,000 customers per query (its memory does not grow with the shard),
scores 2,000 at a time and stages its rows (a customer whose scoring fails goes to the
dead-letter table); `measure_feedback` scores last week's recommendations against the orders
placed since; `validate` checks coverage (>= 95% of active customers), score range and failure
rate (<= 5%). Only then does each mapped `publish` write its shard's `{week}:{customer_id}` keys
(TTL 8 days) and WeeklyRecommendation rows, and `finalize` flip `recs:current_week` and write
`recs:metadata:last_run`. A run that fails validation changes no key and no row.

`user_ids` recomputes only those customers (the backfill DAG triggers such runs): their keys and
rows are replaced, those now without recommendations are removed, and the pointer stays.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task
from nightshift_operators import WeeklyRecsShardOperator

from include.jobs.dag_defaults import DEFAULT_ARGS, START_DATE, run_date
from include.jobs.deadlines import job_deadline
from include.runtime.config import SOURCE_POOL


@dag(
    schedule="0 6 * * 1",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    deadline=job_deadline("weekly_recs"),
    tags=["nightshift", "recommendations"],
    doc_md=__doc__,
    params={
        "as_of_date": Param(None, type=["null", "string"], format="date",
                            description="Recommend as of this date (YYYY-MM-DD); empty: the run's date."),
        "week": Param(None, type=["null", "string"], pattern=r"^\d{4}-W\d{2}$",
                      description="ISO week of the keys, e.g. 2025-W46; empty: the week of as_of_date."),
        "top_n": Param(None, type=["null", "integer"], minimum=1, maximum=200,
                       description="Recommendations per customer; empty: RECS_TOP_N (25)."),
        "shard_count": Param(None, type=["null", "integer"], minimum=1, maximum=1024,
                             description="Parallel shards (the seed's --workers); empty: RECS_WORKERS."),
        "limit": Param(None, type=["null", "integer"], minimum=1,
                       description="Only the first N active customers (by ID)."),
        "user_ids": Param(None, type=["null", "array"], items={"type": "integer", "minimum": 1}, minItems=1,
                          maxItems=10_000,
                          description="Only these customers (at most 10,000); the pointer does not move."),
        "dry_run": Param(False, type="boolean", description="Compute everything, write nothing."),
    },
)
def weekly_recs():
    @task
    def resolve_settings(**context) -> dict:
        import datetime as dt

        from include.jobs.weekly_recs import RecsRun

        today = dt.datetime.now(dt.timezone.utc).date()
        return RecsRun.from_params(context["params"], run_date(context), today, context["run_id"]).to_dict()

    @task(pool=SOURCE_POOL)
    def plan(run: dict) -> list[dict]:
        from include.jobs import weekly_recs as job

        return job.plan(job.RecsRun.from_dict(run))

    @task(pool=SOURCE_POOL)
    def prepare(run: dict) -> dict:
        from include.jobs import weekly_recs as job

        return job.prepare(job.RecsRun.from_dict(run))

    @task(pool=SOURCE_POOL)
    def measure_feedback(run: dict) -> dict:
        from include.jobs import weekly_recs as job

        return job.feedback(job.RecsRun.from_dict(run))

    @task
    def validate(run: dict, stats: list[dict]) -> dict:
        from include.jobs import weekly_recs as job

        return job.validate(job.RecsRun.from_dict(run), list(stats))

    @task
    def publish(shard: dict, run: dict, summary: dict) -> dict:
        from include.jobs import weekly_recs as job

        return job.publish_shard(job.RecsRun.from_dict(run), shard)

    @task
    def finalize(run: dict, summary: dict, last_week: dict, published: list[dict], **context) -> dict:
        from include.jobs import weekly_recs as job

        return job.finalize(job.RecsRun.from_dict(run), summary, last_week, context["dag_run"].start_date)

    run = resolve_settings()
    shards = plan(run)
    stats = WeeklyRecsShardOperator.partial(task_id="process", run=run, prepared=prepare(run),
                                            pool=SOURCE_POOL).expand(shard=shards)
    summary = validate(run, stats.output)
    published = publish.partial(run=run, summary=summary).expand(shard=shards)
    finalize(run, summary, measure_feedback(run), published)


weekly_recs()

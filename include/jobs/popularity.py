"""popularity and popular_segments: decayed event scores per product and per customer segment.

popularity (BATCH_INFRASTRUCTURE job 1, every 5 minutes): check_inputs -> score -> publish.
`score` runs one set-based UPDATE of "Product".popularity_score (aggregation in the database,
no events pulled into Python) and the post-checks in the same transaction: readers see the old
complete set until the commit, and a failed statement or check rolls everything back.
`publish` then replaces the Redis sorted sets `popular:global` and `popular:category:{category}`
(top N, TTL 900), each key in one atomic script call (cluster-safe: no multi-key command), so a
reader sees each set old or new, never missing or half-written.

popular_segments (MySanta, every 15 minutes): the same score summed per gender, age_group and
geo_id segment, top N per segment and category, into popular_items (delete + load in one
transaction) and `popular:segment:{segment_type}:{segment_value}:{category}` (TTL 900).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from include.jobs import event_scoring
from include.jobs.event_scoring import fail
from include.runtime import config, metrics
from include.runtime.config import RESULTS_CONN_ID, SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.progress import log_summary
from include.runtime.redis_cache import RedisCache

log = logging.getLogger(__name__)

JOB = "popularity"
SEGMENTS_JOB = "popular_segments"


@dataclass(frozen=True)
class PopularityRun(event_scoring.DecayWindow):
    """A run's settings: DAG params over Variables/environment over the defaults."""

    as_of: dt.datetime
    half_life_days: float
    window_days: float
    weights: dict[str, float]
    top_n: int
    ttl: int
    max_age_hours: float

    @classmethod
    def from_params(cls, params: dict[str, Any], run_after: dt.datetime, now: dt.datetime,
                    segments: bool = False) -> "PopularityRun":
        pick = event_scoring.pick
        run = cls(as_of=event_scoring.resolve_as_of(params.get("as_of"), run_after, now),
                  half_life_days=pick(params, "half_life_days", "POPULARITY_HALF_LIFE_DAYS"),
                  window_days=pick(params, "window_days", "POPULARITY_WINDOW_DAYS"),
                  weights=event_scoring.weights_from(params),
                  top_n=pick(params, "top_n", "POPULAR_SEGMENT_TOP_N" if segments else "POPULARITY_TOP_N", int),
                  ttl=pick(params, "ttl", "POPULAR_SEGMENT_TTL" if segments else "POPULARITY_TTL", int),
                  max_age_hours=pick(params, "freshness_hours", "EVENTS_MAX_AGE_HOURS"))
        run.check_decay()
        return run

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "as_of": self.as_of.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PopularityRun":
        return cls(**{**data, "as_of": dt.datetime.fromisoformat(data["as_of"])})


def check_inputs(run: PopularityRun, job: str = JOB) -> dict[str, Any]:
    """Pre-checks: schema, freshness, completeness of the events in the window."""
    with Database(SOURCE_CONN_ID) as db:
        event_scoring.check_schema(db, job)
        stats = event_scoring.check_events(db, job, run.as_of, run.since, run.max_age_hours)
    log_summary(f"{job} input checks passed (as_of {run.as_of.isoformat()})", stats)
    return stats


def _post_problems(row: dict[str, Any], events_in_window: int) -> dict[str, str]:
    problems = {}
    if not row["products"]:
        problems["count"] = "the Product table is empty"
    elif events_in_window and not row["scored"]:
        problems["count"] = f"no product got a score > 0 from {events_in_window} events (are all weights 0?)"
    if row["out_of_range"]:
        problems["range"] = f"{row['out_of_range']} scores are negative, infinite or NaN"
    return problems


def score(run: PopularityRun, input_stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """Update every product's popularity_score and check them, in one transaction."""
    started = time.monotonic()
    events_in_window = int((input_stats or {}).get("events_in_window", 0))
    with Database(SOURCE_CONN_ID) as db:
        conn = db.conn
        try:
            with conn.cursor() as cur:
                event_scoring.raise_work_mem(db, cur)
                cur.execute(db.sql("update_popularity_scores"), run.decay.sql_params(run.as_of))
                updated = cur.rowcount
                cur.execute(db.sql("popularity_score_stats"), {})
                row = dict(zip([d[0] for d in cur.description], cur.fetchone()))
            problems = _post_problems(row, events_in_window)
            for check in ("count", "range"):
                metrics.check(JOB, check, check not in problems)
            if problems:
                fail(f"popularity post-checks failed: {problems}; expected at least one scored product and all "
                     "scores finite and >= 0. Rolled back: the previous scores stay live.", JOB)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    stats = {"products": int(row["products"]), "scored": int(row["scored"] or 0), "updated": int(updated),
             "max_score": float(row["max_score"] or 0.0), "seconds": round(time.monotonic() - started, 3)}
    metrics.quality(JOB, "scored_products", stats["scored"])
    log_summary(f"popularity scores committed (as_of {run.as_of.isoformat()})", stats)
    return stats


# Replaces one sorted set: DEL, ZADD in slices (Lua's unpack stops near 8,000 values), EXPIRE. One
# key per call, so it runs on the key's own node of a Redis Cluster and is atomic: a reader sees
# the old or the new set, never a missing or half-written one. Sent as EVAL: redis-py's cluster
# pipeline refuses EVALSHA.
_REPLACE_SORTED_SET = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2000 do
  redis.call('ZADD', KEYS[1], unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
if #ARGV > 1 and tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return (#ARGV - 1) / 2
"""


def replace_sorted_sets(cache: RedisCache, sets: dict[str, dict[str, float]], ttl: int | None) -> int:
    """Replace each key's sorted set with `members` (member -> score), each key atomically, the keys
    pipelined (no multi-key transaction: keys of other hash slots may live on other nodes). An empty
    set deletes its key. A key of a category or segment missing from `sets` keeps its TTL."""
    pipe = cache.client.pipeline(transaction=False)
    for n, (key, members) in enumerate(sets.items(), 1):
        pairs = [x for member, value in members.items() for x in (repr(float(value)), member)]
        pipe.execute_command("EVAL", _REPLACE_SORTED_SET, 1, key, int(ttl or 0), *pairs)
        if n % cache.chunk_size == 0:
            pipe.execute()
    pipe.execute()
    return len(sets)


def publish(run: PopularityRun, stats: dict[str, Any], started_at: dt.datetime | None = None) -> dict[str, Any]:
    """Top products globally and per category into Redis sorted sets; run metrics."""
    with Database(SOURCE_CONN_ID) as db:
        top = db.frame("popularity_top", {"top_n": run.top_n})
    global_key, category_key = config.get("POPULAR_GLOBAL_KEY"), config.get("POPULAR_CATEGORY_KEY")
    sets: dict[str, dict[str, float]] = {global_key: {}}
    for product_id, category, value, global_rank, category_rank in top[
            ["product_id", "category", "score", "global_rank", "category_rank"]].itertuples(index=False):
        if not value > 0:  # products without events in the window are not popular
            continue
        if global_rank <= run.top_n:
            sets[global_key][str(int(product_id))] = float(value)
        if category is not None and category == category and category_rank <= run.top_n:
            sets.setdefault(category_key.format(category=category), {})[str(int(product_id))] = float(value)
    cache = RedisCache()
    try:
        keys = replace_sorted_sets(cache, sets, run.ttl)
    finally:
        cache.close()
    elapsed = ((dt.datetime.now(dt.timezone.utc) - started_at).total_seconds() if started_at
               else stats.get("seconds", 0.0))
    metrics.job_run(JOB, "success", elapsed, stats.get("products", 0))
    summary = {**stats, "redis_keys": keys, "global_top": len(sets[global_key]), "as_of": run.as_of.isoformat()}
    log_summary("popularity published", summary)
    return summary


def refresh_segments(run: PopularityRun, input_stats: dict[str, Any] | None = None,
                     computed_at: dt.datetime | None = None) -> dict[str, Any]:
    """Popular items per segment and category: query, post-check, popular_items and Redis."""
    import pandas as pd

    from include.runtime.bulk_writer import BulkWriter

    started = time.monotonic()
    with Database(SOURCE_CONN_ID) as db:
        with db.conn.cursor() as cur:  # SET LOCAL lasts until the frame's commit
            event_scoring.raise_work_mem(db, cur)
        rows = db.frame("popular_segments", {**run.decay.sql_params(run.as_of), "top_n": run.top_n})
    events_in_window = int((input_stats or {}).get("events_in_window", 0))
    scores = pd.to_numeric(rows["score"], errors="coerce") if len(rows) else pd.Series(dtype=float)
    problems = {}
    if events_in_window and rows.empty:
        problems["count"] = f"no segment got a popular item from {events_in_window} events"
    bad = int((~scores.between(0, 1e300, inclusive="right")).sum()) if len(rows) else 0
    if bad:
        problems["range"] = f"{bad} scores are not finite and > 0"
    for check in ("count", "range"):
        metrics.check(SEGMENTS_JOB, check, check not in problems)
    if problems:
        fail(f"popular_segments post-checks failed: {problems}. Nothing written: the previous lists stay live.",
             SEGMENTS_JOB)

    computed_at = (computed_at or dt.datetime.now(dt.timezone.utc)).replace(tzinfo=None, microsecond=0)
    frame = rows.assign(computed_at=computed_at, score=scores.astype(float),
                        segment_value=rows["segment_value"].astype(str))
    with Database(RESULTS_CONN_ID) as results:
        written = BulkWriter(results).load("popular_items", frame, delete="delete_popular_items")
    key = config.get("POPULAR_SEGMENT_KEY")
    sets: dict[str, dict[str, float]] = {}
    for segment_type, segment_value, category, product_id, value in frame[
            ["segment_type", "segment_value", "category", "product_id", "score"]].itertuples(index=False):
        name = key.format(segment_type=segment_type, segment_value=segment_value, category=category)
        sets.setdefault(name, {})[str(int(product_id))] = float(value)
    cache = RedisCache()
    try:
        keys = replace_sorted_sets(cache, sets, run.ttl)
    finally:
        cache.close()
    stats = {"rows": written, "redis_keys": keys,
             "segments": int(frame[["segment_type", "segment_value"]].drop_duplicates().shape[0]) if written else 0,
             "as_of": run.as_of.isoformat(), "seconds": round(time.monotonic() - started, 3)}
    metrics.job_run(SEGMENTS_JOB, "success", stats["seconds"], written)
    log_summary("popular segments refreshed", stats)
    return stats

"""user_affinity: per user and category the decayed interaction strength in [0, 1], and MySanta
user profiles (BATCH_INFRASTRUCTURE job 2, daily).

resolve_settings -> check_inputs -> compute -> publish.

Incremental by construction: with exponential decay every event of a user loses the same factor
as time passes, so a user's strengths all scale together and the normalised affinities (strength
over the user's strongest category) change only when the user's event set in the window changes:
new events in (watermark, as_of], or events leaving the window in (watermark - window,
as_of - window]. Those users, and only those, are recomputed; the result equals a full rebuild
(tests/integration/test_user_affinity.py checks it). Not covered: events that arrive late with
a timestamp before the watermark, and changed decay settings or product categories: run with
full_rebuild=true then (the param), e.g. weekly.

`compute` records the recomputed users in user_affinity_recompute under the run's key (a
backfill may run beside the scheduled run), reads their events in the window
(one bulk query) and scores them with include/models/affinity.py, then replaces their rows in
user_category_affinity and user_profiles (bulk COPY; TRUNCATE first on a full rebuild) and runs
the post-checks, all in one transaction: a failing check rolls back and the previous values stay.
`publish` rewrites the users' Redis hashes `affinity:user:{id}` (category -> affinity), each user
atomically and cluster-safe, and only then moves the watermark, so a failed publish is redone by
the retry or the next run. Only a whole run (every changed user, every feature) moves it, to its
as_of: a run for some users or features (a backfill's conf) leaves other rows as they were. A
whole run with an as_of older than the watermark is a full rebuild (AffinityRun.from_params), so
the tables then describe that as_of and the watermark goes back with them: kept newer, the next
incremental run would skip the users whose events changed in between.
The tables live on the source_db connection, beside the events the statements read.
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
from include.runtime.config import SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.progress import Progress, log_summary
from include.runtime.redis_cache import RedisCache

log = logging.getLogger(__name__)

JOB = "user_affinity"
# What a run recomputes; a backfill may pick a subset (its `features`).
FEATURES = {"affinity": "user_category_affinity", "profiles": "user_profiles"}  # feature -> the table it fills
RECOMPUTE_KEEP_DAYS = 7  # a run's recompute rows older than this belong to a run that failed for good


@dataclass(frozen=True)
class AffinityRun(event_scoring.DecayWindow):
    """A run's settings; `previous` is the watermark (last successful as_of), None on a full rebuild;
    `run_key` names the run's set of users to recompute (the DAG run id; a backfill's own)."""

    run_key: str
    as_of: dt.datetime
    full_rebuild: bool
    previous: dt.datetime | None
    half_life_days: float
    window_days: float
    weights: dict[str, float]
    top_n: int
    ttl: int
    max_age_hours: float

    @classmethod
    def from_params(cls, params: dict[str, Any], run_after: dt.datetime, now: dt.datetime,
                    watermark: dt.datetime | None, run_key: str) -> "AffinityRun":
        pick = event_scoring.pick
        as_of = event_scoring.resolve_as_of(params.get("as_of"), run_after, now)
        full = bool(params.get("full_rebuild", False))
        if not full and watermark is None:
            log.info("no watermark yet: this run is a full rebuild")
            full = True
        elif not full and as_of < watermark:
            log.info("as_of %s is before the watermark %s: this run is a full rebuild", as_of, watermark)
            full = True
        run = cls(run_key=run_key, as_of=as_of, full_rebuild=full, previous=None if full else watermark,
                  half_life_days=pick(params, "half_life_days", "AFFINITY_HALF_LIFE_DAYS"),
                  window_days=pick(params, "window_days", "AFFINITY_WINDOW_DAYS"),
                  weights=event_scoring.weights_from(params),
                  top_n=pick(params, "top_n", "PROFILE_TOP_N", int),
                  ttl=pick(params, "ttl", "AFFINITY_TTL", int),
                  max_age_hours=pick(params, "freshness_hours", "EVENTS_MAX_AGE_HOURS"))
        run.check_decay()
        if not any(run.weights.values()):
            fail(f"all event weights are 0 ({run.weights}); at least one must be > 0 to score anything")
        return run

    def recompute_params(self) -> dict[str, Any]:
        """Which users to recompute: see insert_user_affinity_recompute.sql."""
        window = dt.timedelta(days=self.window_days)
        if self.previous is None:
            return {"full": 1, "as_of": self.as_of, "changed_since": self.since,
                    "expired_since": self.since, "expired_until": self.since}
        return {"full": 0, "as_of": self.as_of, "changed_since": max(self.previous, self.since),
                "expired_since": self.previous - window, "expired_until": self.since}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "as_of": self.as_of.isoformat(),
                "previous": self.previous.isoformat() if self.previous else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AffinityRun":
        return cls(**{**data, "as_of": dt.datetime.fromisoformat(data["as_of"]),
                      "previous": dt.datetime.fromisoformat(data["previous"]) if data["previous"] else None})


def read_watermark() -> dt.datetime | None:
    with Database(SOURCE_CONN_ID) as db:
        value = db.scalar("job_watermark", {"job": JOB})
    return value


def check_inputs(run: AffinityRun) -> dict[str, Any]:
    """Pre-checks: schema, freshness, completeness of the events in the window."""
    with Database(SOURCE_CONN_ID) as db:
        event_scoring.check_schema(db, JOB)
        stats = event_scoring.check_events(db, JOB, run.as_of, run.since, run.max_age_hours)
    log_summary(f"user_affinity input checks passed (as_of {run.as_of.isoformat()}, "
                f"{'full rebuild' if run.full_rebuild else f'incremental since {run.previous.isoformat()}'})", stats)
    return stats


def _post_problems(row: dict[str, Any], full: bool, events_in_window: int) -> dict[str, str]:
    problems = {}
    if row["out_of_range"]:
        problems["range"] = f"{row['out_of_range']} affinities outside (0, 1] or NaN"
    if row["users_at_one"] != row["affinity_users"]:
        problems["normalised"] = (f"{row['affinity_users'] - row['users_at_one']} users have no category at "
                                  "affinity 1")
    if row["bad_profiles"]:
        problems["profiles"] = f"{row['bad_profiles']} profiles with interaction_count <= 0 or a bad avg_price"
    if not row["affinity_users"] <= row["profiles"] <= row["recomputed_users"]:
        problems["count"] = (f"expected affinity users ({row['affinity_users']}) <= profiles ({row['profiles']}) "
                             f"<= recomputed users ({row['recomputed_users']})")
    elif full and events_in_window and not row["profiles"]:
        problems["count"] = f"a full rebuild over {events_in_window} events produced no profile"
    return problems


def _mark_recomputed(db: Database, params: dict[str, Any], user_ids: list[int] | None) -> None:
    """Record the users this run recomputes in user_affinity_recompute (its own transaction: the
    events read joins it on another connection)."""
    with db.failing_for_good("marking the users to recompute"), db.conn.cursor() as cur:
        cur.execute(db.sql("delete_user_affinity_recompute"), params)
        if user_ids is None:
            cur.execute(db.sql("insert_user_affinity_recompute"), params)
        else:
            cur.executemany(db.sql("insert_user_affinity_recompute_user"),
                            [{**params, "user_id": int(u)} for u in user_ids])
    db.conn.commit()


def compute(run: AffinityRun, input_stats: dict[str, Any] | None = None, updated_at: dt.datetime | None = None,
            user_ids: list[int] | None = None, features: list[str] | None = None) -> dict[str, Any]:
    """Recompute the changed users' affinities and profiles (include/models/affinity.py over their
    events), then replace their rows and check them in one transaction. A backfill passes
    `user_ids` (recompute exactly those users) and/or `features` (a subset of FEATURES); the
    affinity/profile count check needs both features. The stats say which, for publish."""
    from include.models.affinity import user_affinity
    from include.runtime.bulk_writer import BulkWriter

    started = time.monotonic()
    updated_at = (updated_at or dt.datetime.now(dt.timezone.utc)).replace(tzinfo=None, microsecond=0)
    everyone = run.full_rebuild and user_ids is None
    params = {**run.decay.sql_params(run.as_of), **run.recompute_params(), "everyone": int(everyone),
              "run_key": run.run_key, "created_at": updated_at,
              "stale_before": updated_at - dt.timedelta(days=RECOMPUTE_KEEP_DAYS)}
    features = list(features or FEATURES)
    if not features or set(features) - set(FEATURES):
        raise ValueError(f"features must be a non-empty subset of {sorted(FEATURES)}, got {features}")
    with Database(SOURCE_CONN_ID) as db:
        _mark_recomputed(db, params, user_ids)
        events = db.bulk_frame("user_affinity_events", params)
        scored = user_affinity(events, db.bulk_frame("user_affinity_products"), run.as_of, run.decay, run.top_n)
        log.info("scored %d events: %d affinities of %d users in %.1fs", len(events), len(scored.affinity),
                 len(scored.profiles), time.monotonic() - started)
        del events
        rows = {"affinity": scored.affinity, "profiles": scored.profiles}
        writer, conn = BulkWriter(db), db.conn
        try:
            with db.failing_for_good("replacing the affinities and profiles"), conn.cursor() as cur:
                for feature in features:
                    table, step = FEATURES[feature], time.monotonic()
                    # a full rebuild replaces every row: TRUNCATE, not millions of row deletes
                    cur.execute(db.sql(f"{'truncate' if everyone else 'delete'}_{table}"), params)
                    written = writer.write(cur, table, rows[feature].assign(updated_at=updated_at))
                    log.info("%s: %d rows in %.1fs", table, written, time.monotonic() - step)
                cur.execute(db.sql("user_affinity_stats"), params)
                row = {k: int(v or 0) for k, v in zip([d[0] for d in cur.description], cur.fetchone())}
            problems = _post_problems(row, run.full_rebuild, int((input_stats or {}).get("events_in_window", 0)))
            if len(features) < len(FEATURES):
                problems.pop("count", None)
            for check in ("range", "normalised", "profiles", "count"):
                metrics.check(JOB, check, check not in problems)
            if problems:
                fail(f"user_affinity post-checks failed: {problems}. Rolled back: the previous affinities and "
                     "profiles stay live.", JOB)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    stats = {"mode": "full" if run.full_rebuild else "incremental", "users_recomputed": row["recomputed_users"],
             "affinity_rows": row["affinity_rows"], "affinity_users": row["affinity_users"],
             "profiles": row["profiles"], "seconds": round(time.monotonic() - started, 3),
             "features": sorted(features), "some_users": user_ids is not None}
    log_summary(f"user_affinity committed (as_of {run.as_of.isoformat()})", stats)
    return stats


# Replaces users' hashes in one server-side call per batch: DEL, then HSET of its fields (and
# EXPIRE), each user atomic. redis-py packs commands in pure Python at about 10,000 users a second;
# a script fed flat JSON arrays moves the per-user loop into Redis. A batch's keys all hash to one
# slot (a script's keys must on Redis Cluster); the batches go through non-transactional pipelines
# as EVAL (redis-py's cluster pipeline refuses EVALSHA; Redis caches the compiled script anyway).
_REPLACE_HASHES = """
local data = cjson.decode(ARGV[1])
local counts, fields, values = data[1], data[2], data[3]
local ttl = tonumber(ARGV[2])
local j = 1
for i = 1, #KEYS do
  redis.call('DEL', KEYS[i])
  local n = counts[i]
  if n > 0 then
    local args = {}
    for k = 0, n - 1 do
      args[2 * k + 1] = fields[j + k]
      args[2 * k + 2] = values[j + k]
    end
    redis.call('HSET', KEYS[i], unpack(args))
    if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  end
  j = j + n
end
return #KEYS
"""


def write_hashes(cache: RedisCache, rows, key: str, ttl: int | None, chunk_users: int = 2000) -> dict[str, int]:
    """Replace each user's hash with its (category, affinity) rows, rows sorted by user; a user whose
    only row has a null category loses the hash. Each user's replacement is atomic: a reader sees
    the old or the new hash, never none. About `chunk_users` users go to Redis per round trip."""
    import json

    import numpy as np
    import pandas as pd
    from redis.crc import key_slot

    users = rows["user_id"].to_numpy()
    if len(users) == 0:
        return {"users": 0, "hashes": 0, "deleted": 0}
    has = pd.notna(rows["category"]).to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.add.reduceat(has.astype(np.int64), starts)
    keys = np.array([key.format(user_id=u) for u in users[starts].tolist()], dtype=object)
    # users (and their fields) in hash-slot order, so each slot's users are one contiguous run
    slots = np.fromiter((key_slot(k.encode()) for k in keys), dtype=np.int64, count=len(keys))
    order = np.argsort(slots, kind="stable")
    field_order = np.argsort(np.repeat(slots, counts), kind="stable")
    keys, counts, slots = keys[order].tolist(), counts[order], slots[order]
    offsets = np.r_[0, np.cumsum(counts)].tolist()
    fields = rows["category"].to_numpy(dtype=object)[has][field_order].tolist()
    values = list(map(repr, rows["affinity"].to_numpy(dtype=float)[has][field_order].tolist()))
    slot_starts = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]]).tolist() + [len(keys)]
    hashes, counts = int((counts > 0).sum()), counts.tolist()

    pipe = cache.client.pipeline(transaction=False)
    progress = Progress("affinity hashes", len(keys), every=max(chunk_users * 50, 1))
    queued = 0
    for first, end in zip(slot_starts[:-1], slot_starts[1:]):
        for a in range(first, end, chunk_users):
            b = min(a + chunk_users, end)
            payload = json.dumps([counts[a:b], fields[offsets[a]:offsets[b]], values[offsets[a]:offsets[b]]])
            pipe.execute_command("EVAL", _REPLACE_HASHES, b - a, *keys[a:b], payload, int(ttl or 0))
            queued += b - a
        if queued >= chunk_users or end == len(keys):
            pipe.execute()
            progress.update(succeeded=queued)
            queued = 0
    return {"users": len(keys), "hashes": hashes, "deleted": len(keys) - hashes}


def publish(run: AffinityRun, stats: dict[str, Any], started_at: dt.datetime | None = None) -> dict[str, Any]:
    """The recomputed users' Redis hashes (when the run computed affinities), then the watermark
    (whole runs only), then the run metrics; the run's set of users to recompute is cleared last.
    `stats` are compute's."""
    started = time.monotonic()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    features = stats["features"]
    written = {"users": 0, "hashes": 0, "deleted": 0}
    with Database(SOURCE_CONN_ID) as db:
        if "affinity" in features:
            rows = db.bulk_frame("user_affinity_redis_rows", {"run_key": run.run_key})
            cache = RedisCache()
            try:
                written = write_hashes(cache, rows, config.get("AFFINITY_KEY"), run.ttl or None)
            finally:
                cache.close()
        moves = not stats["some_users"] and len(features) == len(FEATURES)
        if moves:
            db.execute("upsert_job_watermark", {"job": JOB, "watermark": run.as_of, "updated_at": now})
        watermark = run.as_of if moves else db.scalar("job_watermark", {"job": JOB})
        db.execute("delete_user_affinity_recompute",
                   {"run_key": run.run_key, "stale_before": now - dt.timedelta(days=RECOMPUTE_KEEP_DAYS)})
    elapsed = ((dt.datetime.now(dt.timezone.utc) - started_at).total_seconds() if started_at
               else stats.get("seconds", 0.0) + time.monotonic() - started)
    metrics.quality(JOB, "users_recomputed", stats.get("users_recomputed", 0))
    metrics.job_run(JOB, "success", elapsed, stats.get("users_recomputed", 0))
    summary = {**stats, **{f"redis_{k}": v for k, v in written.items()}, "watermark_moved": moves,
               "watermark": watermark.isoformat() if watermark else None,
               "redis_seconds": round(time.monotonic() - started, 3)}
    log_summary("user_affinity published", summary)
    return summary

"""Staged publication, shared by the jobs whose keys a reader uses (DESIGN.md, data flow 3-5).

`process` stages a shard's documents (include/runtime/staging.py); only after `validate` passed
does a mapped `publish` per shard SET them through pipelines, one key per command (safe on Redis
Cluster: no multi-key command), so each key goes from its old value to its new one and is never
missing. Keys of entities a run was asked for by id that now yield nothing are unlinked after
their shard's new values are in. Run pointers and metadata never move back to an older date.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from include.runtime import config, staging
from include.runtime.progress import log_summary
from include.runtime.redis_cache import RedisCache

log = logging.getLogger(__name__)


def stage_documents(job: str, run_key: str, shard: int, of: int, pairs: list[tuple[str, str]]) -> int:
    """Stage a shard's (key, JSON) documents for its publish task; how many."""
    staging.save(job, run_key, shard, of, staging.documents(pairs))
    return len(pairs)


def publish_documents(job: str, run, shard: int, of: int, ttl: int | None,
                      key_of: Callable[[int], str]) -> dict[str, Any]:
    """SET the shard's staged documents with `ttl`; then unlink the keys (`key_of(id)`) of the ids
    the run was asked for in this shard that got no new document. Nothing on a dry run.
    Idempotent: a retry writes the same values."""
    if run.dry_run:
        return {"shard": shard, "of": of, "keys_written": 0, "keys_removed": 0}
    requested_keys = [key_of(i) for i in run.requested(shard, of)]
    frame = staging.load(job, run.run_key, shard, of)
    keys = frame["key"].tolist()
    cache = RedisCache(chunk_size=config.get_int("REDIS_CHUNK_SIZE"))
    try:
        written = cache.set_many(zip(keys, frame["value"].tolist()), ttl)
        fresh = set(keys)
        removed = cache.delete_many([k for k in requested_keys if k not in fresh])
    finally:
        cache.close()
    stats = {"shard": shard, "of": of, "keys_written": written, "keys_removed": removed}
    log_summary(f"{job} shard {shard + 1}/{of} published", stats)
    return stats


def write_metadata(run, key: str, metadata: dict[str, Any], ttl: int | None) -> bool:
    """Write a run's metadata key: only for a run of every entity, not a dry run, and never over the
    metadata of a later as_of_date; whether it was written."""
    if run.dry_run or run.ids is not None:
        return False
    cache = RedisCache()
    try:
        if not not_older(cache, key, "as_of_date", run.as_of.isoformat()):
            log.info("%s holds a later as_of_date than %s: left as it is", key, run.as_of)
            return False
        cache.set_json(key, metadata, ttl=ttl)
        return True
    finally:
        cache.close()


def not_older(cache: RedisCache, key: str, field: str | None, value: str) -> bool:
    """Whether `value` is at least what `key` holds (its JSON `field`, or the plain value when
    `field` is None); a missing key or field counts as older."""
    current = cache.get(key) if field is None else (cache.get_json(key) or {}).get(field)
    return current is None or str(current) <= value

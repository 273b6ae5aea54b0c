"""The parts every sharded job shares: shard descriptors, the stats sum and the failure gate."""
from __future__ import annotations

from typing import Any, Iterable

MAX_SHARDS = 1024  # Airflow's max_map_length


def shard_plan(entities: int, shard_count: int) -> list[dict[str, int]]:
    """Descriptors {"shard": k, "of": n}; a shard takes the ids with id % n == k."""
    if not 1 <= shard_count <= MAX_SHARDS:
        raise ValueError(f"shard_count must be between 1 and {MAX_SHARDS}, got {shard_count}")
    n = max(1, min(shard_count, entities))
    return [{"shard": k, "of": n} for k in range(n)]


def total(stats: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the numeric fields of the shards' stats; `shards` counts them."""
    summed: dict[str, Any] = {"shards": 0}
    for item in stats:
        summed["shards"] += 1
        for key, value in item.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("shard", "of"):
                summed[key] = summed.get(key, 0) + value
    return summed


def failure_rate(failed: int, processed: int) -> float:
    return failed / processed if processed else 0.0


def failure_gate(job: str, summary: dict[str, Any], processed_key: str, max_rate: float) -> tuple[float, bool]:
    """Record the run's failure rate in `summary` and as metrics; (rate, within the limit).
    On a breach it also counts the run as failed, so the caller only raises its message."""
    from include.runtime import metrics

    processed = summary.get(processed_key, 0)
    rate = failure_rate(summary.get("failed", 0), processed)
    summary["failure_rate"] = round(rate, 4)
    passed = rate <= max_rate
    metrics.check(job, "failure_rate", passed)
    metrics.quality(job, "failure_rate", rate)
    if not passed:
        metrics.job_run(job, "failed", 0.0, processed)
    return rate, passed

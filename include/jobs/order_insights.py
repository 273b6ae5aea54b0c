"""Order insights: a daily digest (summary + tips) per active user, cached for the API.

plan -> process (one per shard) -> validate -> publish (one per shard) -> finalize, as in
DESIGN.md. `plan` counts the active users with at least `min_orders` orders in the last `days`
days; each shard loads its users' order statistics in one query (plus the small per-category
best-seller list), a generator from include.models.insights writes the digests and the shard
stages them (include/jobs/publication.py): no key a reader uses changes before `validate` passed.
Then each shard's `publish` SETs `recommendations:user:{customer_id}` (TTL `cache_ttl`) and
`finalize` writes `recommendations:metadata:last_run`. A user whose digest failed, or whose rows
make the generator raise, is counted and sent to the dead-letter table; the shard goes on. All API
keys exhausted stops the run at once.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

from include.jobs import publication
from include.jobs.run_params import RunSettings, as_of_date, entity_ids, int_param
from include.jobs.sharding import failure_gate, shard_plan, total
from include.runtime import config, dead_letters, metrics, source_quality, staging
from include.runtime.config import RESULTS_CONN_ID, SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.progress import Progress, log_summary

log = logging.getLogger(__name__)

JOB = "order_insights"
GENERATORS = ("rules", "llm")
_NO_LIMIT = 2**31 - 1


def _fail(message: str):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


@dataclass(frozen=True)
class InsightsRun(RunSettings):
    """A run's settings: DAG params over Variables/environment over the defaults."""

    as_of: dt.date
    days: int
    min_orders: int
    cache_ttl: int
    shard_count: int
    limit: int | None
    generator: str
    dry_run: bool
    max_failure_rate: float
    llm_conn_id: str
    run_key: str
    user_ids: list[int] | None = None  # only these users (a backfill, a re-drive)
    IDS = "user_ids"

    @classmethod
    def from_params(cls, params: dict[str, Any], run_date: dt.date, today: dt.date, run_key: str) -> "InsightsRun":
        """Resolve and check what JSON schema cannot: a real date that is not in the future."""
        as_of = as_of_date(params.get("as_of_date"), run_date, today)

        generator = params.get("generator") or config.get("INSIGHTS_GENERATOR")
        if generator not in GENERATORS:
            raise _fail(f"generator must be one of {list(GENERATORS)}, got {generator!r}")
        return cls(as_of=as_of, days=int_param(params, "days", "INSIGHTS_DAYS"), min_orders=int_param(params, "min_orders", "INSIGHTS_MIN_ORDERS"),
                   cache_ttl=int_param(params, "cache_ttl", "INSIGHTS_TTL"), shard_count=int_param(params, "shard_count", "INSIGHTS_WORKERS"),
                   limit=params.get("limit"), generator=generator, dry_run=bool(params.get("dry_run", False)),
                   max_failure_rate=config.get_float("INSIGHTS_MAX_FAILURE_RATE"),
                   llm_conn_id=config.get("INSIGHTS_LLM_CONN_ID"), run_key=run_key,
                   user_ids=entity_ids(params.get("user_ids")))

    def query_params(self, shard: int = 0, of: int = 1) -> dict[str, Any]:
        until = dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time())
        return {"since": until - dt.timedelta(days=self.days), "until": until, "as_of": self.as_of,
                "min_orders": self.min_orders, "limit": self.limit or _NO_LIMIT, "shard": shard, "of": of,
                **source_quality.rule_params()}


def _llm_hook(run: InsightsRun):
    from include.runtime.llm_client import LLMHook

    return LLMHook(run.llm_conn_id, max_rate_limits=config.get_int("INSIGHTS_LLM_MAX_RATE_LIMITS"),
                   backoff_cap=config.get_float("INSIGHTS_LLM_BACKOFF_CAP"),
                   timeout=config.get_float("INSIGHTS_LLM_TIMEOUT"))


def _check_llm_connection(run: InsightsRun) -> None:
    """Fail before any work when the LLM connection is missing or incomplete (a conf/auth problem)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    hook = _llm_hook(run)
    try:
        client = hook.get_conn()
    except AirflowNotFoundException:
        raise _fail(f"generator 'llm' needs the Airflow connection {run.llm_conn_id!r} (conn_type http, host = "
                    "base URL of an OpenAI-compatible API, extra api_keys = [keys], extra model); "
                    "create it or run with generator 'rules'") from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    log.info("LLM generator: %s with %d keys", client.url, len(client.pool.keys))
    hook.close()


def plan(run: InsightsRun) -> list[dict[str, int]]:
    """Count the insight users; one descriptor per shard."""
    if run.generator == "llm":
        _check_llm_connection(run)
    with Database(SOURCE_CONN_ID) as db:
        counts = db.frame("order_insights_users", run.query_params())
    users, orders = int(counts["users"].iloc[0]), int(counts["orders"].iloc[0])
    shards = run.shards_to_run(shard_plan(users, run.shard_count))
    log.info("as_of %s: %d active users with >= %d orders in the last %d days (%d orders) in %d shards%s",
             run.as_of, users, run.min_orders, run.days, orders, len(shards),
             f" holding the {len(run.user_ids)} requested users" if run.user_ids is not None else "")
    return shards


def _numeric(frame, columns):
    import pandas as pd

    for column in columns:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _generate(generator, stats, users, fatal) -> tuple[list, list[tuple[int, str, str]]]:
    """The generator's output frames for `users` and (customer_id, error, stack trace) of each user
    whose rows make it raise: a chunk that raises is split in halves until the user is alone, so one
    bad entity never fails its shard. `fatal` errors (all API keys exhausted) end the run instead.
    A user's own write errors the generator turns into error rows; what raises is the chunk's data,
    met while profiles are built, before any LLM request, so the halves rarely repeat one."""
    try:
        return [generator.generate(stats[stats["customer_id"].isin(users)])], []
    except fatal:
        raise
    except Exception as exc:
        if len(users) == 1:
            log.warning("user %s isolated: the generator raised %s: %s", users[0], type(exc).__name__, exc)
            return [], [(int(users[0]), f"{type(exc).__name__}: {exc}"[:1000], traceback.format_exc())]
    half = len(users) // 2
    first, first_failed = _generate(generator, stats, users[:half], fatal)
    second, second_failed = _generate(generator, stats, users[half:], fatal)
    return first + second, first_failed + second_failed


def process_shard(run: InsightsRun, shard: int, of: int, job_id: str, chunk_size: int = 500) -> dict[str, Any]:
    """Stage the digests of one shard's users (only the run's `user_ids` when given) for `publish`
    and record its dead letters; small stats back. Writes no key a reader uses."""
    import pandas as pd

    from include.models.insights import LLMGenerator, RulesGenerator, insight_document

    started = time.monotonic()
    params = run.query_params(shard, of)
    with Database(SOURCE_CONN_ID) as db:
        stats = _numeric(db.frame("order_insights_stats", params), ("spend", "items", "category_items", "category_spend"))
        catalog = _numeric(db.frame("order_insights_catalog", params), ("price",))
    bad_rows = source_quality.quarantine(JOB, job_id, shard, params["since"], params["until"], run.dry_run)
    if run.user_ids is not None:
        stats = stats[stats["customer_id"].isin(run.requested(shard, of))]
    users = stats["customer_id"].unique() if len(stats) else []
    log.info("shard %d/%d: %d users, %d user-category rows and %d catalogue categories loaded in %.1fs",
             shard + 1, of, len(users), len(stats), len(catalog), time.monotonic() - started)

    hook = client = None
    fatal: tuple[type[BaseException], ...] = ()
    if run.generator == "llm":
        from include.runtime.llm_client import AllKeysExhausted

        hook = _llm_hook(run)
        client = hook.get_conn()
        fatal = (AllKeysExhausted,)
        generator = LLMGenerator(client.complete, catalog, window_days=run.days, abort_on=fatal)
    else:
        generator = RulesGenerator(catalog, window_days=run.days)

    progress = Progress(f"shard {shard + 1}/{of} users", len(users), every=min(chunk_size, config.get_int("PROGRESS_EVERY")))
    generated_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    key = config.get("INSIGHTS_KEY")
    documents: list[tuple[str, str]] = []
    failures: list[tuple[int, str, str | None]] = []  # (customer_id, error, stack trace)
    tips = 0
    try:
        for begin in range(0, len(users), chunk_size):
            try:
                outputs, raised = _generate(generator, stats, users[begin:begin + chunk_size], fatal)
            except fatal as exc:
                raise _fail(f"order_insights stopped: {exc}. Shard {shard + 1}/{of} had generated {len(documents)} "
                            f"of {len(users)} users' digests; nothing was published. Add API keys to connection "
                            f"{run.llm_conn_id!r}, wait for the quota to reset, or run with generator 'rules'.") from exc
            done = len(documents)
            bad = list(raised)
            for row in (row for out in outputs for row in out.itertuples(index=False)):
                if row.error is not None:
                    bad.append((int(row.customer_id), row.error, None))
                    continue
                try:
                    documents.append((key.format(customer_id=int(row.customer_id)),
                                      insight_document(row.summary, row.tips, generated_at, generator.name)))
                    tips += len(row.tips)
                except ValueError as exc:
                    bad.append((int(row.customer_id), f"{type(exc).__name__}: {exc}", None))
            failures += bad
            progress.update(succeeded=len(documents) - done, failed=len(bad))
    finally:
        if hook is not None:
            hook.close()

    if not run.dry_run:
        publication.stage_documents(JOB, run.run_key, shard, of, documents)
        # recorded even when empty: a retried shard replaces the letters of its earlier try
        letters = pd.DataFrame({"error": [e for _, e, _ in failures], "stack_trace": [t for _, _, t in failures],
                                "input": [{"customer_id": c, "as_of": run.as_of.isoformat(), "days": run.days,
                                           "generator": run.generator, "shard": shard, "of": of}
                                          for c, _, _ in failures]})
        with Database(RESULTS_CONN_ID) as results:
            dead_letters.record(results, JOB, job_id, letters)
    result = {"shard": shard, "of": of, "users": int(len(users)), "successful": len(documents),
              "failed": len(failures), "staged": 0 if run.dry_run else len(documents), "tips": tips, **bad_rows,
              "seconds": round(time.monotonic() - started, 3)}
    if client is not None:
        result.update({"llm_requests": client.requests, "llm_rate_limits": client.pool.rate_limits,
                       "llm_keys_exhausted": len(client.pool.exhausted)})
    log_summary(f"order insights shard {shard + 1}/{of} done ({generator.name} generator)", result)
    return result


def validate(run: InsightsRun, stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the shards; fail the run (nothing published) above the failure-rate limit."""
    summary = total(stats)
    rate, passed = failure_gate(JOB, summary, "users", run.max_failure_rate)
    log_summary("order insights validation", summary)
    if not passed:
        raise _fail(f"{summary['failed']} of {summary['users']} users got no digest ({rate:.1%} > "
                    f"{run.max_failure_rate:.0%}); nothing was published, every digest and the run metadata stay "
                    f"as they were. See the dead_letter table (job_name {JOB!r}) for the errors.")
    return summary


def publish_shard(run: InsightsRun, shard: int, of: int) -> dict[str, Any]:
    """SET the shard's staged digests (only after validation passed); a run for `user_ids` also
    unlinks the keys of its requested users that got no digest. Nothing on a dry run."""
    key = config.get("INSIGHTS_KEY")
    return publication.publish_documents(JOB, run, shard, of, run.cache_ttl,
                                         lambda customer_id: key.format(customer_id=customer_id))


def finalize(run: InsightsRun, summary: dict[str, Any], published: list[dict[str, Any]],
             started_at: dt.datetime | None) -> dict[str, Any]:
    """Write recommendations:metadata:last_run (a full run, never back to an older as_of) and the
    run's metrics; discard the staged digests."""
    now = dt.datetime.now(dt.timezone.utc)
    elapsed = (now - started_at).total_seconds() if started_at else summary.get("seconds", 0.0)
    users = summary.get("users", 0)
    written = total(published)
    metadata = {"last_run": now.isoformat(timespec="seconds"), "as_of_date": run.as_of.isoformat(),
                "generator": run.generator, "days": run.days, "min_orders": run.min_orders,
                "total_users": users, "successful": summary.get("successful", 0),
                "failed": summary.get("failed", 0), "keys_written": written.get("keys_written", 0),
                "keys_removed": written.get("keys_removed", 0),
                "avg_tips": round(summary.get("tips", 0) / summary["successful"], 2) if summary.get("successful") else 0,
                "elapsed_seconds": round(elapsed, 1), "bad_source_rows": source_quality.run_counts(summary),
                "dry_run": run.dry_run}
    for name in ("llm_requests", "llm_rate_limits"):
        if name in summary:
            metadata[name] = summary[name]
    publication.write_metadata(run, config.get("INSIGHTS_METADATA_KEY"), metadata, run.cache_ttl)
    staging.discard(JOB, run.run_key)
    metrics.quality(JOB, "coverage", summary.get("successful", 0) / users if users else 1.0)
    metrics.job_run(JOB, "success", elapsed, users)
    log_summary("order insights published" if not run.dry_run else "order insights dry run (nothing written)", metadata)
    return metadata

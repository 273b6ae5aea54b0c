"""cf_training: implicit ALS on orders and events, shadow-evaluated, versioned, promoted with care.

resolve_settings -> train -> promote -> similarities -> publish.

`train` reads per (user, product) the order and event counts of the history window, split at
`cutoff = until - holdout_days` into training data and a temporal holdout; builds the
confidence matrix (weighted counts, sparse users/items dropped), fits ALS with BLAS held to one
thread (implicit parallelises itself), and scores NDCG/recall/precision@k on the holdout's
buyers. The currently promoted model is scored on the same users and truth (shadow
evaluation); the new version is saved either way (factors .npy, id maps, metadata.json with
checksums) and marked for promotion only when its NDCG is not worse than the promoted one's by
more than `tolerance` (relative). `promote` flips the pointer atomically (or restores
`rollback_to`); `similarities` writes MySanta's user_similarities from the promoted factors;
`publish` applies retention (the last N versions and anything younger than N days stay) and
writes `cf:metadata:last_run`.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from include.runtime import config, metrics
from include.runtime.config import RESULTS_CONN_ID, SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.model_loaders import CF_MODEL, ALSFactors, load_als
from include.runtime.model_store import ArtifactError, ModelStore
from include.runtime.progress import log_summary

log = logging.getLogger(__name__)

JOB = "cf_training"
PRIMARY = "ndcg"


def _fail(message: str):
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


@dataclass(frozen=True)
class CFRun:
    """A run's settings: DAG params over Variables/environment over the defaults."""

    as_of: dt.date
    history_days: int
    holdout_days: int
    min_interactions: int
    factors: int
    regularization: float
    iterations: int
    alpha: float
    k: int
    eval_users: int
    tolerance: float
    weights: dict[str, float] = field(default_factory=dict)
    rollback_to: str | None = None
    force_promote: bool = False
    shadow: bool = False  # train and evaluate only: a backfill of a past date never promotes
    random_state: int = 0
    keep_versions: int = 5
    keep_days: float = 7.0

    @classmethod
    def from_params(cls, params: dict[str, Any], run_date: dt.date, today: dt.date) -> "CFRun":
        def pick(name: str, setting: str, cast=float):
            value = params.get(name)
            return cast(value if value is not None else config.get(setting))

        raw = params.get("as_of_date")
        try:
            as_of = dt.date.fromisoformat(raw) if raw else run_date
        except ValueError:
            _fail(f"as_of_date must be a date YYYY-MM-DD, got {raw!r}")
        if as_of > today:
            _fail(f"as_of_date {as_of} is in the future (today is {today})")
        run = cls(as_of=as_of, history_days=pick("history_days", "CF_HISTORY_DAYS", int),
                  holdout_days=pick("holdout_days", "CF_HOLDOUT_DAYS", int),
                  min_interactions=pick("min_interactions", "CF_MIN_INTERACTIONS", int),
                  factors=pick("factors", "CF_FACTORS", int), regularization=pick("regularization", "CF_REGULARIZATION"),
                  iterations=pick("iterations", "CF_ITERATIONS", int), alpha=pick("alpha", "CF_ALPHA"),
                  k=pick("k", "CF_EVAL_K", int), eval_users=pick("eval_users", "CF_EVAL_USERS", int),
                  tolerance=pick("tolerance", "CF_PROMOTION_TOLERANCE"),
                  weights={"order": config.get_float("CF_WEIGHT_ORDER"),
                           "purchase": config.get_float("CF_WEIGHT_PURCHASE"),
                           "add_to_cart": config.get_float("CF_WEIGHT_ADD_TO_CART"),
                           "view": config.get_float("CF_WEIGHT_VIEW")},
                  rollback_to=params.get("rollback_to") or None, force_promote=bool(params.get("force_promote", False)),
                  shadow=bool(params.get("shadow", False)), random_state=int(params.get("random_state") or 0),
                  keep_versions=config.get_int("CF_KEEP_VERSIONS"), keep_days=config.get_float("CF_KEEP_DAYS"))
        if run.holdout_days >= run.history_days:
            _fail(f"holdout_days ({run.holdout_days}) must be shorter than history_days ({run.history_days})")
        if not 0 <= run.tolerance < 1:
            _fail(f"tolerance is a relative NDCG drop in [0, 1), got {run.tolerance}")
        if run.rollback_to:
            try:
                ModelStore(CF_MODEL).path(run.rollback_to)
            except ArtifactError as exc:
                _fail(f"rollback_to: {exc}")
        return run

    @property
    def until(self) -> dt.datetime:
        return dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time())

    @property
    def cutoff(self) -> dt.datetime:
        return self.until - dt.timedelta(days=self.holdout_days)

    @property
    def since(self) -> dt.datetime:
        return self.until - dt.timedelta(days=self.history_days)

    def model_params(self) -> dict[str, Any]:
        return {"factors": self.factors, "regularization": self.regularization, "iterations": self.iterations,
                "alpha": self.alpha, "random_state": self.random_state}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "as_of": self.as_of.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CFRun":
        return cls(**{**data, "as_of": dt.date.fromisoformat(data["as_of"])})


def read_interactions(run: CFRun):
    """(orders, events) aggregated per pair and holdout flag, from the source database."""
    params = {"since": run.since, "cutoff": run.cutoff, "until": run.until}
    with Database(SOURCE_CONN_ID) as db:
        orders = db.bulk_frame("cf_order_interactions", params)
        events = db.bulk_frame("cf_event_interactions", params)
    return orders, events


def decide(new: dict[str, float], baseline: dict[str, float] | None, k: int, tolerance: float) -> tuple[bool, str]:
    """Promote when there is no promoted model, or the new NDCG@k >= (1 - tolerance) x the promoted one's."""
    key = f"{PRIMARY}@{k}"
    if new.get("users", 0) == 0:
        return False, "no holdout users to evaluate on: the new model cannot be judged (kept as candidate)"
    if baseline is None:
        return True, f"no promoted model yet; {key} {new[key]:.4f}"
    floor = baseline[key] * (1 - tolerance)
    if new[key] >= floor:
        return True, f"{key} {new[key]:.4f} vs promoted {baseline[key]:.4f} (floor {floor:.4f} at tolerance {tolerance})"
    return False, (f"{key} {new[key]:.4f} is worse than the promoted model's {baseline[key]:.4f} beyond the "
                   f"tolerance {tolerance} (floor {floor:.4f}); kept as candidate")


def fit_and_evaluate(run: CFRun, orders, events, now: dt.datetime | None = None,
                     store: ModelStore | None = None) -> dict[str, Any]:
    """Build the matrix, fit, evaluate against the promoted model, save the version; a small summary."""
    from threadpoolctl import threadpool_limits

    from include.models import als

    store = store or ModelStore(CF_MODEL)
    started = time.monotonic()
    data = als.build_interactions(orders, events, run.weights, run.min_interactions)
    built = time.monotonic()
    log.info("matrix: %d users x %d items, %d pairs (%d users and %d items under %d interactions dropped), "
             "%d holdout pairs, built in %.1fs", *data.matrix.shape, data.matrix.nnz, data.dropped_users,
             data.dropped_items, run.min_interactions, len(data.holdout), built - started)
    if data.matrix.nnz == 0:
        _fail(f"no training interactions between {run.since} and {run.cutoff} after dropping users and items with "
              f"fewer than {run.min_interactions} interactions; lower min_interactions or widen history_days")
    # implicit parallelises itself and BLAS threads would fight it; on this shared 2-core machine a
    # 2-thread OpenBLAS is also ~15x slower than 1 thread for the evaluation's matrix products
    with threadpool_limits(limits=1, user_api="blas"):
        model = als.ALSModel(**run.model_params()).fit(data.matrix)
        fitted = time.monotonic()
        return _evaluate_and_save(run, data, model, store, now, started, built, fitted)


def _evaluate_and_save(run: CFRun, data, model, store: ModelStore, now, started: float, built: float,
                       fitted: float) -> dict[str, Any]:
    """Score the new and the promoted model on the same holdout, decide, save the version."""
    import numpy as np

    from include.models import als

    eval_users, truth, seen = als.holdout_truth(data, run.eval_users, run.random_state)
    new_metrics = als.evaluate(model.user_factors_, model.item_factors_, data.user_ids, data.item_ids,
                               eval_users, truth, run.k, seen)
    baseline, baseline_version, baseline_note = None, store.current(), None
    if baseline_version:
        try:
            arrays, meta = store.load(baseline_version)
            promoted = ALSFactors(baseline_version, arrays["user_ids"], arrays["item_ids"], arrays["user_factors"],
                                  arrays["item_factors"], meta)
            baseline = als.evaluate(promoted.user_factors, promoted.item_factors, promoted.user_ids,
                                    promoted.item_ids, eval_users, truth, run.k, seen)
            trained_until = promoted.metadata.get("data_window", {}).get("cutoff")
            if trained_until and trained_until > run.cutoff.isoformat():
                baseline_note = (f"the promoted model was trained on data up to {trained_until}, after this "
                                 f"holdout's start {run.cutoff.isoformat()}: the comparison favours it")
                log.warning("%s", baseline_note)
        except (ArtifactError, LookupError) as exc:
            baseline_note = f"promoted model {baseline_version} could not be loaded ({exc}); judged without it"
            log.error("%s", baseline_note)
    evaluated = time.monotonic()
    promote, reason = decide(new_metrics, baseline, run.k, run.tolerance)
    if not promote and run.force_promote:
        promote, reason = True, f"force_promote: {reason}"
    if promote and run.shadow:
        promote, reason = False, f"shadow run, never promoted (would have been: {reason})"
    if baseline_note:
        reason = f"{reason}; note: {baseline_note}"

    metadata = {"job": JOB, "params": {**run.model_params(), "min_interactions": run.min_interactions,
                                       "weights": run.weights, "k": run.k, "tolerance": run.tolerance},
                "data_window": {"since": run.since.isoformat(), "cutoff": run.cutoff.isoformat(),
                                "until": run.until.isoformat(), "as_of": run.as_of.isoformat()},
                "shape": {"users": int(data.matrix.shape[0]), "items": int(data.matrix.shape[1]),
                          "pairs": int(data.matrix.nnz), "dropped_users": int(data.dropped_users),
                          "dropped_items": int(data.dropped_items), "holdout_pairs": int(len(data.holdout))},
                "metrics": new_metrics, "baseline": {"version": baseline_version, "metrics": baseline},
                "decision": {"promote": promote, "reason": reason},
                "seconds": {"matrix": round(built - started, 2), "fit": round(fitted - built, 2),
                            "evaluate": round(evaluated - fitted, 2)}}
    version = store.save({"user_factors": model.user_factors_, "item_factors": model.item_factors_,
                          "user_ids": data.user_ids.astype(np.int64), "item_ids": data.item_ids.astype(np.int64)},
                         metadata, now=now)
    summary = {"version": version, "promote": promote, "reason": reason, "metrics": new_metrics,
               "baseline_version": baseline_version, "baseline_metrics": baseline, **metadata["shape"],
               **{f"{k}_seconds": v for k, v in metadata["seconds"].items()},
               "save_seconds": round(time.monotonic() - evaluated, 2)}
    log_summary(f"cf_training: version {version} {'to promote' if promote else 'kept as candidate'}", summary)
    return summary


def train(run: CFRun) -> dict[str, Any]:
    """Read, fit, evaluate and save a new version (nothing to train on rollback)."""
    if run.rollback_to:
        log.info("rollback_to=%s: no training in this run", run.rollback_to)
        return {"version": run.rollback_to, "promote": True, "rollback": True,
                "reason": f"rollback to {run.rollback_to} requested"}
    started = time.monotonic()
    orders, events = read_interactions(run)
    log.info("read %d order pairs and %d event rows in %.1fs", len(orders), len(events), time.monotonic() - started)
    if orders.empty and events.empty:
        _fail(f"no orders or events between {run.since} and {run.until}: nothing to train on")
    return fit_and_evaluate(run, orders, events)


def promote(run: CFRun, result: dict[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """Flip the pointer to the new (or rolled-back-to) version when decided; the model live after it."""
    store = ModelStore(CF_MODEL)
    before = store.current()
    if not result["promote"]:
        log.warning("version %s NOT promoted: %s. The live model stays %s.", result["version"], result["reason"], before)
        metrics.check(JOB, "promotion", False)
        return {"current": before, "promoted": False, "version": result["version"], "reason": result["reason"]}
    try:
        pointer = store.promote(result["version"], result["reason"], now=now)
    except ArtifactError as exc:
        metrics.check(JOB, "promotion", False)
        _fail(f"refusing to promote: {exc}. The live model stays {before}.")
    metrics.check(JOB, "promotion", True)
    return {"current": pointer["version"], "promoted": True, "previous": before, "version": result["version"],
            "reason": result["reason"], "rollback": bool(result.get("rollback"))}


def similarities(max_similar: int | None = None, batch_size: int = 50_000) -> dict[str, Any]:
    """user_similarities from the promoted user factors: top MAX_SIMILAR_USERS per user, rebuilt whole."""
    import numpy as np
    import pandas as pd

    from include.models.vector_index import similar_rows
    from include.runtime.bulk_writer import BulkWriter

    max_similar = max_similar or config.get_int("MAX_SIMILAR_USERS")
    try:
        model = load_als()
    except LookupError:
        log.warning("no promoted cf model: user_similarities left as it is")
        return {"users": 0, "rows": 0, "version": None}
    except ArtifactError as exc:
        _fail(f"the promoted cf model is damaged: {exc}; roll back with rollback_to=<version>")
    started = time.monotonic()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        rows, scores = similar_rows(model.user_factors, max_similar)
    computed = time.monotonic()
    n, k = rows.shape
    valid = rows >= 0
    frame = pd.DataFrame({"user_id": np.repeat(model.user_ids, k)[valid.ravel()],
                          "rank": np.tile(np.arange(1, k + 1, dtype=np.int16), n)[valid.ravel()],
                          "similar_user_id": model.user_ids[rows[valid]],
                          "score": scores[valid].astype(float), "model_version": model.version})
    with Database(RESULTS_CONN_ID) as db:
        written = BulkWriter(db).load("user_similarities", frame, delete="delete_user_similarities")
    stats = {"version": model.version, "users": int(n), "rows": int(written),
             "compute_seconds": round(computed - started, 2), "write_seconds": round(time.monotonic() - computed, 2)}
    log_summary("user_similarities rebuilt", stats)
    return stats


def publish(run: CFRun, result: dict[str, Any], promotion: dict[str, Any], similar: dict[str, Any],
            started_at: dt.datetime | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """Retention, the run metadata key, metrics."""
    from include.runtime.redis_cache import RedisCache

    now = now or dt.datetime.now(dt.timezone.utc)
    store = ModelStore(CF_MODEL)
    removed = store.retain(run.keep_versions, dt.timedelta(days=run.keep_days), now)
    duration = (now - started_at).total_seconds() if started_at else 0.0
    metadata = {"as_of_date": run.as_of.isoformat(), "completed_at": now.isoformat(timespec="seconds"),
                "current_version": promotion["current"], "trained_version": result["version"],
                "promoted": promotion["promoted"], "rollback": bool(result.get("rollback")),
                "reason": promotion["reason"], "metrics": result.get("metrics"),
                "baseline_metrics": result.get("baseline_metrics"), "similar_users_rows": similar.get("rows", 0),
                "versions_kept": len(store.version_ids()), "versions_removed": removed,
                "duration_seconds": round(duration, 1)}
    cache = RedisCache()
    try:
        cache.set_json(config.get("CF_METADATA_KEY"), metadata, ttl=None)
    finally:
        cache.close()
    for name, value in (result.get("metrics") or {}).items():
        if "@" in name:
            metrics.quality(JOB, name.replace("@", "_at_"), value)
    metrics.job_run(JOB, "success", duration, result.get("pairs", 0))
    log_summary("cf_training published", metadata)
    return metadata

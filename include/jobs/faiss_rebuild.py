"""faiss_rebuild: product text embeddings -> a validated FAISS index, versioned, swapped atomically.

resolve_settings -> build -> publish.

`build` reads every product's name, category, brand and description, hashes each text and
embeds only those missing from the embedding cache (keyed by text hash and embedder
fingerprint). The embedder is a sentence-transformers model from a local directory or an
installed model package (FAISS_EMBEDDING_MODEL / FAISS_EMBEDDING_PACKAGE; nothing is
downloaded) when sentence-transformers is importable, else the deterministic TF-IDF + SVD
fallback, fitted once and versioned like a model. The index type follows N (exact below
FAISS_EXACT_LIMIT, IVF above, nprobe tuned to the recall target); validation measures recall@10
against exact search on queries disjoint from the tuning ones and the query latency, and a
recall under `min_recall` fails the run before anything is promoted. `publish` flips the
pointer, keeps the previous index for FAISS_KEEP_HOURS after it was replaced, and writes
`faiss:metadata:last_run`. `rollback_to=<version>` re-points to an earlier index.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from include.runtime import config, metrics
from include.runtime.config import SOURCE_CONN_ID
from include.runtime.database import Database
from include.runtime.model_loaders import EMBEDDER_MODEL, FAISS_MODEL
from include.runtime.model_store import ArtifactError, ModelStore
from include.runtime.progress import Progress, log_summary

log = logging.getLogger(__name__)

JOB = "faiss_rebuild"
K = 10


def _fail(message: str):
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


@dataclass(frozen=True)
class FaissRun:
    index_type: str
    exact_limit: int
    min_recall: float
    validation_queries: int
    nprobe: int | None
    embedding_model: str
    embedding_package: str
    fallback_dim: int
    refit_embedder: bool
    rollback_to: str | None
    keep_hours: float
    random_state: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "FaissRun":
        def pick(name, setting, cast=float):
            value = params.get(name)
            return cast(value if value is not None else config.get(setting))

        from include.models.vector_index import INDEX_TYPES

        run = cls(index_type=params.get("index_type") or "auto",
                  exact_limit=pick("exact_limit", "FAISS_EXACT_LIMIT", int),
                  min_recall=pick("min_recall", "FAISS_MIN_RECALL"),
                  validation_queries=pick("validation_queries", "FAISS_VALIDATION_QUERIES", int),
                  nprobe=params.get("nprobe"), embedding_model=params.get("embedding_model") or config.get(
                      "FAISS_EMBEDDING_MODEL"), embedding_package=config.get("FAISS_EMBEDDING_PACKAGE"),
                  fallback_dim=config.get_int("FAISS_FALLBACK_DIM"),
                  refit_embedder=bool(params.get("refit_embedder", False)),
                  rollback_to=params.get("rollback_to") or None, keep_hours=config.get_float("FAISS_KEEP_HOURS"),
                  random_state=int(params.get("random_state") or 0))
        if run.index_type not in INDEX_TYPES:
            _fail(f"index_type must be one of {INDEX_TYPES}, got {run.index_type!r}")
        if not 0 < run.min_recall <= 1:
            _fail(f"min_recall is a recall@{K} in (0, 1], got {run.min_recall}")
        if run.rollback_to:
            try:
                ModelStore(FAISS_MODEL).path(run.rollback_to)
            except ArtifactError as exc:
                _fail(f"rollback_to: {exc}")
        return run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaissRun":
        return cls(**data)


def _package_model_dir(package: str) -> Path | None:
    """The sentence-transformers model directory (the one holding modules.json) inside an installed package."""
    if not package:
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("modules.json"))
        if found:
            return found[0].parent
    return None


def resolve_embedder(run: FaissRun, texts: list[str]):
    """(embedder, description): the sentence-transformers model when available, else TF-IDF + SVD."""
    from include.models.embeddings import SentenceTransformerEmbedder, TfidfSvdEmbedder

    model_dir = Path(run.embedding_model) if run.embedding_model else _package_model_dir(run.embedding_package)
    if model_dir is not None:
        try:
            embedder = SentenceTransformerEmbedder(model_dir)
            return embedder, {"kind": embedder.kind, "model_dir": str(model_dir), "fingerprint": embedder.fingerprint}
        except ImportError as exc:
            log.warning("%s; using the TF-IDF + SVD fallback", exc)
    else:
        log.info("no sentence-transformers model (FAISS_EMBEDDING_MODEL empty, package %r not installed): "
                 "using the TF-IDF + SVD fallback", run.embedding_package)
    store = ModelStore(EMBEDDER_MODEL)
    version = None if run.refit_embedder else store.current()
    if version:
        try:
            arrays, _ = store.load(version)
            embedder = TfidfSvdEmbedder.from_arrays(arrays)
            return embedder, {"kind": embedder.kind, "version": version, "fingerprint": embedder.fingerprint}
        except (ArtifactError, ValueError) as exc:
            log.warning("fallback embedder %s unusable (%s); fitting a new one", version, exc)
    started = time.monotonic()
    embedder = TfidfSvdEmbedder(dim=run.fallback_dim, random_state=run.random_state).fit(texts)
    version = store.save(embedder.arrays(), {"job": JOB, "kind": embedder.kind, "dim": embedder.dimension,
                                             "vocabulary": len(embedder.vocabulary_), "fitted_on": len(texts),
                                             "fingerprint": embedder.fingerprint})
    store.promote(version, "refit requested" if run.refit_embedder else "first fit")
    log.info("fitted the TF-IDF + SVD embedder on %d texts in %.1fs: %d terms -> %d dims (version %s)", len(texts),
             time.monotonic() - started, len(embedder.vocabulary_), embedder.dimension, version)
    return embedder, {"kind": embedder.kind, "version": version, "fingerprint": embedder.fingerprint, "refit": True}


def embed(run: FaissRun, products, batch_size: int = 20_000) -> tuple[Any, dict[str, Any]]:
    """Embeddings of every product (rows in `products` order), through the cache; (vectors, stats)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # a 2-thread OpenBLAS crawls on a shared 2-core box
        return _embed(run, products, batch_size)


def _embed(run: FaissRun, products, batch_size: int) -> tuple[Any, dict[str, Any]]:
    import numpy as np

    from include.models.embeddings import product_texts, text_hashes
    from include.runtime.embedding_cache import EmbeddingCache

    texts = product_texts(products)
    hashes = text_hashes(texts)
    embedder, info = resolve_embedder(run, texts)
    cache = EmbeddingCache(info["fingerprint"])
    found, cached = cache.lookup(hashes)
    missing = np.flatnonzero(~found)
    started = time.monotonic()
    vectors = np.empty((len(texts), embedder.dimension), dtype=np.float32)
    if cached is not None:
        vectors[found] = cached
    progress = Progress("embedding new or changed products", len(missing), every=batch_size)
    for begin in range(0, len(missing), batch_size):
        rows = missing[begin:begin + batch_size]
        vectors[rows] = embedder.encode([texts[i] for i in rows])
        progress.update(succeeded=len(rows))
    seconds = time.monotonic() - started
    if len(missing):
        cache.save(hashes, vectors)
    stats = {"embedder": info, "products": len(texts), "cached": int(found.sum()), "embedded": int(len(missing)),
             "embed_seconds": round(seconds, 2),
             "embeddings_per_second": round(len(missing) / seconds, 1) if len(missing) and seconds > 0 else None}
    return vectors, stats


def check_index(report: dict[str, Any], min_recall: float) -> None:
    """Fail the run (AirflowFailException) when recall@k is under `min_recall`."""
    if report.get("recall") is None or report["recall"] < min_recall:
        metrics.check(JOB, "recall", False)
        current = ModelStore(FAISS_MODEL).current()
        _fail(f"index validation failed: recall@{report.get('k', K)} {report.get('recall')} < {min_recall} on "
              f"{report.get('queries')} sampled queries ({report.get('index_type')} {report.get('params')}); nothing "
              f"promoted, the live index stays {current}. Raise nprobe (or leave it empty to tune) or use "
              "index_type=flat.")
    metrics.check(JOB, "recall", True)


def build_and_validate(run: FaissRun, product_ids, vectors) -> tuple[Any, dict[str, Any]]:
    """Index of the right type for N, tuned and validated; (index, report dict)."""
    from include.models import vector_index as vi

    index, report = vi.build_index(vectors, run.index_type, run.exact_limit, run.random_state)
    tuning, validation = vi.sample_queries(len(vectors), run.validation_queries, run.random_state)
    started = time.monotonic()
    if run.nprobe and report.index_type == "ivf":
        index.nprobe = int(run.nprobe)
        report.params = {**report.params, "nprobe": int(run.nprobe), "tuned": False}
    else:
        vi.tune(index, report, vectors, tuning, run.min_recall, K)
    tuned = time.monotonic()
    vi.validate(index, report, vectors, validation, K)
    result = {**report.to_dict(), "tune_seconds": round(tuned - started, 2),
              "validate_seconds": round(time.monotonic() - tuned, 2)}
    log_summary(f"index built and validated ({len(product_ids)} products)", result)
    return index, result


def build(run: FaissRun) -> dict[str, Any]:
    """Embed (through the cache), build, validate and save a new index version; a small summary."""
    import numpy as np

    from include.models import vector_index as vi

    if run.rollback_to:
        return {"version": run.rollback_to, "rollback": True}
    started = time.monotonic()
    with Database(SOURCE_CONN_ID) as db:
        products = db.frame("product_texts")
    if products.empty:
        _fail("the Product table is empty: nothing to index")
    product_ids = products["product_id"].astype("int64").to_numpy()
    vectors, embed_stats = embed(run, products)
    index, report = build_and_validate(run, product_ids, vectors)
    check_index(report, run.min_recall)
    version = ModelStore(FAISS_MODEL).save(
        {"index": vi.serialize(index), "product_ids": product_ids.astype(np.int64)},
        {"job": JOB, "index": report, "embeddings": embed_stats, "products": int(len(product_ids)),
         "dim": int(vectors.shape[1])})
    summary = {"version": version, "products": int(len(product_ids)), **{k: v for k, v in embed_stats.items()
                                                                         if k != "embedder"},
               "embedder": embed_stats["embedder"]["kind"], "index_type": report["index_type"],
               "index_params": report["params"], f"recall@{K}": report["recall"],
               "latency_ms_p50": report["latency_ms_p50"], "latency_ms_p95": report["latency_ms_p95"],
               "seconds": round(time.monotonic() - started, 2)}
    log_summary(f"faiss_rebuild: version {version} validated", summary)
    return summary


def publish(run: FaissRun, result: dict[str, Any], started_at: dt.datetime | None = None,
            now: dt.datetime | None = None) -> dict[str, Any]:
    """Flip the pointer, retention (the replaced index stays FAISS_KEEP_HOURS), metadata key, metrics."""
    from include.runtime.redis_cache import RedisCache

    now = now or dt.datetime.now(dt.timezone.utc)
    store = ModelStore(FAISS_MODEL)
    before = store.current()
    reason = f"rollback to {run.rollback_to} requested" if result.get("rollback") else \
        f"validated: recall@{K} {result.get(f'recall@{K}')} >= {run.min_recall}"
    try:
        store.promote(result["version"], reason, now=now)
    except ArtifactError as exc:
        _fail(f"refusing to promote: {exc}. The live index stays {before}.")
    removed = store.retain(1, dt.timedelta(hours=run.keep_hours), now)
    duration = (now - started_at).total_seconds() if started_at else result.get("seconds", 0.0)
    metadata = {"completed_at": now.isoformat(timespec="seconds"), "current_version": result["version"],
                "previous_version": before, "reason": reason, "rollback": bool(result.get("rollback")),
                **{k: v for k, v in result.items() if k not in ("version", "rollback")},
                "versions_removed": removed, "duration_seconds": round(duration, 1)}
    cache = RedisCache()
    try:
        cache.set_json(config.get("FAISS_METADATA_KEY"), metadata, ttl=None)
    finally:
        cache.close()
    if result.get(f"recall@{K}") is not None:
        metrics.quality(JOB, f"recall_at_{K}", result[f"recall@{K}"])
    metrics.job_run(JOB, "success", duration, result.get("products", 0))
    log_summary("faiss_rebuild published", metadata)
    return metadata

"""FAISS inner-product indexes over L2-normalised vectors, sized by N, validated against exact search.

Below `exact_limit` vectors an exact IndexFlatIP is both fast enough and perfect. Above it, an
IVF-Flat index: nlist ~ sqrt(N) lists (FAISS guidance: 4..16 sqrt(N) for very large N; sqrt(N)
keeps k-means training cheap on two cores), trained on ~40 points per list, with `nprobe`
tuned on a sample of queries until recall@k against exact search reaches the target. HNSW
(M=32, efSearch tuned the same way) is available on request; it builds slower on few cores.
Validation uses a second, disjoint query sample, so the tuned parameter is not graded on the
queries it was tuned on. Pure: no I/O, seeded by `random_state`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")


@dataclass
class IndexReport:
    index_type: str
    n: int
    dim: int
    params: dict = field(default_factory=dict)
    recall: float | None = None
    k: int = 10
    queries: int = 0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    batch_qps: float | None = None
    build_seconds: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("vector indexes need the package faiss-cpu (pip install faiss-cpu)") from exc
    return faiss


def choose_type(n: int, exact_limit: int = 10_000, requested: str = "auto") -> str:
    if requested not in INDEX_TYPES:
        raise ValueError(f"index type {requested!r}: expected one of {INDEX_TYPES}")
    if requested != "auto":
        return requested
    return "flat" if n < exact_limit else "ivf"


def build_index(vectors: np.ndarray, index_type: str = "auto", exact_limit: int = 10_000, random_state: int = 0):
    """A FAISS index over `vectors` (rows = ids 0..N-1) and its IndexReport (build parameters)."""
    faiss = _faiss()
    x = _check_vectors(vectors)
    n, dim = x.shape
    kind = choose_type(n, exact_limit, index_type)
    started = time.perf_counter()
    params: dict = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(x)
    elif kind == "ivf":
        nlist = max(1, min(int(round(math.sqrt(n))), n // 8 or 1))
        train_n = min(n, 40 * nlist)
        rng = np.random.default_rng(random_state)
        train = x if train_n == n else x[np.sort(rng.choice(n, train_n, replace=False))]
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(random_state)
        index.train(train)
        for begin in range(0, n, 200_000):
            index.add(x[begin:begin + 200_000])
        index.nprobe = max(1, nlist // 32)
        params = {"nlist": nlist, "train_points": train_n, "nprobe": int(index.nprobe)}
    else:
        m = 32
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(x)
        index.hnsw.efSearch = 32
        params = {"M": m, "efConstruction": 80, "efSearch": 32}
    report = IndexReport(index_type=kind, n=n, dim=dim, params=params,
                         build_seconds=round(time.perf_counter() - started, 3))
    return index, report


def _check_vectors(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty 2-d array (n x dim), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values; fix the embeddings before indexing")
    return x


def exact_neighbours(vectors: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows (inner product) for the given query rows, the query row itself excluded."""
    faiss = _faiss()
    x = _check_vectors(vectors)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    _, found = flat.search(x[query_rows], k + 1)
    return _drop_self(found, query_rows, k)


def _drop_self(found: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(found), k), -1, dtype=np.int64)
    for i, (row, q) in enumerate(zip(found, query_rows)):
        kept = row[(row != q) & (row >= 0)][:k]
        out[i, :len(kept)] = kept
    return out


def recall_at_k(index, vectors: np.ndarray, query_rows: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |approximate top-k  ∩  exact top-k| / k over the queries (self excluded on both sides)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    _, found = index.search(x[query_rows], k + 1)
    approx = _drop_self(found, query_rows, k)
    hits = sum(len(set(a[a >= 0].tolist()) & set(t[t >= 0].tolist())) for a, t in zip(approx, truth))
    expected = sum(int((t >= 0).sum()) for t in truth)
    return hits / expected if expected else 1.0


def _set_search_param(index, value: int) -> None:
    faiss = _faiss()
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = value
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = value


def tune(index, report: IndexReport, vectors: np.ndarray, query_rows: np.ndarray, target: float, k: int = 10) -> IndexReport:
    """Raise nprobe (IVF) or efSearch (HNSW) by doubling until recall@k on `query_rows` reaches `target`."""
    if report.index_type == "flat":
        return report
    truth = exact_neighbours(vectors, query_rows, k)
    name, limit = ("nprobe", report.params["nlist"]) if report.index_type == "ivf" else ("efSearch", 4096)
    value = 1 if report.index_type == "ivf" else max(k, 16)
    while True:
        _set_search_param(index, value)
        recall = recall_at_k(index, vectors, query_rows, truth, k)
        if recall >= target or value >= limit:
            break
        value = min(limit, value * 2)
    report.params = {**report.params, name: int(value), "tuning_recall": round(recall, 4)}
    return report


def validate(index, report: IndexReport, vectors: np.ndarray, query_rows: np.ndarray, k: int = 10,
             latency_queries: int = 200) -> IndexReport:
    """Recall@k against exact search on `query_rows` and single-query latency; fills the report."""
    if index.ntotal != len(vectors) or index.d != vectors.shape[1]:
        report.recall, report.queries, report.k = 0.0, len(query_rows), k
        return report
    truth = exact_neighbours(vectors, query_rows, k)
    report.recall = round(recall_at_k(index, vectors, query_rows, truth, k), 4)
    report.k, report.queries = k, len(query_rows)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    timings = []
    for q in query_rows[:latency_queries]:
        started = time.perf_counter()
        index.search(x[q:q + 1], k + 1)
        timings.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    index.search(x[query_rows], k + 1)
    elapsed = time.perf_counter() - started
    report.latency_ms_p50 = round(float(np.percentile(timings, 50)), 3)
    report.latency_ms_p95 = round(float(np.percentile(timings, 95)), 3)
    report.batch_qps = round(len(query_rows) / elapsed, 1) if elapsed > 0 else None
    return report


def sample_queries(n: int, count: int, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint seeded samples of row ids (tuning, validation), each of at most `count`."""
    rng = np.random.default_rng(random_state)
    rows = rng.permutation(n)
    count = min(count, max(1, n // 2))
    return np.sort(rows[:count]), np.sort(rows[count:2 * count]) if n > 1 else rows[:1]


def serialize(index) -> np.ndarray:
    return _faiss().serialize_index(index)


def deserialize(array: np.ndarray):
    return _faiss().deserialize_index(np.ascontiguousarray(array, dtype=np.uint8))


def search(index, vectors: np.ndarray, k: int, batch_size: int = 4096):
    """(scores, rows) of the top-k per query vector, in batches."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    scores = np.empty((len(x), k), dtype=np.float32)
    rows = np.empty((len(x), k), dtype=np.int64)
    for begin in range(0, len(x), batch_size):
        scores[begin:begin + batch_size], rows[begin:begin + batch_size] = index.search(x[begin:begin + batch_size], k)
    return scores, rows


def similar_rows(vectors: np.ndarray, k: int, exact_limit: int = 50_000, target_recall: float = 0.9,
                 batch_size: int = 2048, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k most similar other rows (cosine) of every row, self excluded: (rows, scores), n x k.

    Exact FAISS flat search below `exact_limit` rows, `batch_size` queries at a time (never the
    full n x n matrix: FAISS keeps a k-heap per query over blocked GEMMs); above it an IVF index
    tuned to `target_recall`.
    """
    x = _check_vectors(vectors)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)
    n = len(x)
    k_eff = min(k, n - 1)
    rows = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float32)
    if k_eff <= 0:
        return rows, scores
    if n <= exact_limit:  # exact: FAISS flat search, blocked GEMM with a fused top-k heap
        index = _faiss().IndexFlatIP(x.shape[1])
        index.add(x)
    else:
        index, report = build_index(x, "ivf", random_state=random_state)
        tuning, _ = sample_queries(n, 500, random_state)
        tune(index, report, x, tuning, target_recall, k_eff)
    for begin in range(0, n, batch_size):
        found_scores, found = index.search(x[begin:begin + batch_size], k_eff + 1)
        query = np.arange(begin, begin + len(found))[:, None]
        keep = (found != query) & (found >= 0)
        # stable sort moves the kept entries to the front of each row, in rank order
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k_eff]
        got = np.take_along_axis(keep, order, axis=1)
        rows[begin:begin + len(found), :k_eff] = np.where(got, np.take_along_axis(found, order, axis=1), -1)
        scores[begin:begin + len(found), :k_eff] = np.where(got, np.take_along_axis(found_scores, order, axis=1), 0)
    return rows, scores

"""Embeddings (TF-IDF + SVD fallback) and FAISS index building/validation, without services."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.models import vector_index as vi
from include.models.embeddings import SentenceTransformerEmbedder, TfidfSvdEmbedder, product_texts, text_hashes


def clustered(n: int, dim: int = 32, clusters: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _products(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    cats = np.array(["garden tools", "kitchen knives", "baby food", "dog toys", "laptop bags"])
    c = rng.integers(0, len(cats), n)
    return pd.DataFrame({"name": [f"{cats[k].split()[1]} item {i}" for i, k in enumerate(c)], "category": cats[c],
                         "brand": [f"brand{k}" for k in rng.integers(0, 10, n)],
                         "description": [f"a fine {cats[k]} product" if i % 7 else None for i, k in enumerate(c)]})


def test_tfidf_svd_is_deterministic_and_round_trips():
    products = _products()
    texts = product_texts(products)
    assert texts[0].count(" | ") == 3
    a = TfidfSvdEmbedder(dim=16, random_state=3).fit(texts)
    b = TfidfSvdEmbedder(dim=16, random_state=3).fit(texts)
    assert a.fingerprint == b.fingerprint
    va = a.encode(texts)
    np.testing.assert_array_equal(va, b.encode(texts))
    np.testing.assert_allclose(np.linalg.norm(va, axis=1), 1, atol=1e-5)
    c = TfidfSvdEmbedder.from_arrays(a.arrays())
    np.testing.assert_array_equal(c.encode(texts), va)
    # same category texts are nearer than other categories
    rows, _ = vi.similar_rows(va, 5)
    cats = products["category"].to_numpy()
    assert (cats[rows] == cats[:, None]).mean() > 0.9


def test_text_hashes_change_with_text():
    h = text_hashes(["a", "b", "a"])
    assert h.dtype == np.dtype("S32") and h[0] == h[2] and h[0] != h[1]


def test_sentence_transformers_path_names_its_package(tmp_path):
    (tmp_path / "modules.json").write_text("[]")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="sentence-transformers"):
            SentenceTransformerEmbedder(tmp_path)
    with pytest.raises(ValueError, match="modules.json"):
        SentenceTransformerEmbedder(tmp_path / "nowhere")


def test_index_type_follows_size():
    assert vi.choose_type(9_999) == "flat" and vi.choose_type(10_000) == "ivf"
    assert vi.choose_type(5, requested="hnsw") == "hnsw"
    with pytest.raises(ValueError, match="index type"):
        vi.choose_type(5, requested="lsh")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_tuned_index_reaches_the_recall_target(kind):
    x = clustered(6000)
    index, report = vi.build_index(x, kind, exact_limit=1000)
    tuning, validation = vi.sample_queries(len(x), 200)
    assert not set(tuning) & set(validation)
    vi.tune(index, report, x, tuning, 0.95)
    vi.validate(index, report, x, validation)
    assert report.recall >= 0.93, report.to_dict()
    assert report.latency_ms_p50 > 0 and report.queries == 200
    if kind == "ivf":
        assert report.params["nlist"] == 77 and 1 <= report.params["nprobe"] <= 77


def test_validation_fails_a_broken_index():
    x = clustered(3000)
    _, validation = vi.sample_queries(len(x), 200)
    # built from other vectors than the ones it claims to hold
    wrong, report = vi.build_index(clustered(3000, seed=9), "flat")
    vi.validate(wrong, report, x, validation)
    assert report.recall < 0.2
    # an IVF index probing a single list of many
    ivf, report = vi.build_index(x, "ivf")
    ivf.nprobe = 1
    vi.validate(ivf, report, x, validation)
    assert report.recall < 0.95
    # a truncated index (fewer vectors than ids)
    short, report = vi.build_index(x[:100], "flat")
    vi.validate(short, report, x, validation)
    assert report.recall == 0.0
    from include.jobs.faiss_rebuild import check_index  # the job's gate, as the DAG uses it
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="validation failed"):
        check_index(report.to_dict(), 0.95)


def test_serialize_round_trip_and_bad_vectors():
    x = clustered(500)
    index, _ = vi.build_index(x)
    again = vi.deserialize(vi.serialize(index))
    np.testing.assert_array_equal(vi.search(index, x[:5], 3)[1], vi.search(again, x[:5], 3)[1])
    with pytest.raises(ValueError, match="NaN"):
        vi.build_index(np.full((3, 2), np.nan))

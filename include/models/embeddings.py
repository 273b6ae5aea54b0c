"""Product text embeddings: a sentence-transformers model when one is installed, else TF-IDF + SVD.

Both embedders map texts to L2-normalised float32 rows (inner product = cosine similarity) and
expose a `fingerprint`: cached embeddings are valid only for the embedder that made them, so the
cache is keyed by (fingerprint, text hash).

The fallback is latent semantic analysis (Deerwester et al. 1990): TF-IDF over word unigrams and
bigrams, projected on the top right singular vectors of a sample's TF-IDF matrix, found with
the seeded randomized range finder of Halko, Martinsson & Tropp (2011, alg. 4.4 + 5.1). Fitted
once and stored as arrays, it embeds any later text deterministically; refitting it changes the
fingerprint and so empties the cache.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

TEXT_COLUMNS = ("name", "category", "brand", "description")
_TOKEN = re.compile(r"[0-9a-z]+")


def product_texts(products: pd.DataFrame) -> list[str]:
    """One text per product: name, category, brand and description joined (missing parts skipped)."""
    missing = [c for c in TEXT_COLUMNS if c not in products.columns]
    if missing:
        raise ValueError(f"products lack columns {missing}; expected {list(TEXT_COLUMNS)}")
    parts = [products[c].astype("string").fillna("").str.strip() for c in TEXT_COLUMNS]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.str.cat(part, sep=" | ")
    return joined.tolist()


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """sha1 of each text, 32 hex characters as fixed-width bytes (storable in .npy without pickle)."""
    return np.array([hashlib.sha1(t.encode("utf-8")).hexdigest()[:32].encode() for t in texts], dtype="S32")


def _tokens(text: str) -> list[str]:
    words = _TOKEN.findall(text.lower())
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


class TfidfSvdEmbedder:
    """TF-IDF (sublinear tf, smoothed idf) + truncated SVD; deterministic given `random_state`."""

    kind = "tfidf_svd"

    def __init__(self, dim: int = 128, max_features: int = 50_000, min_df: int = 1, fit_sample: int = 200_000,
                 oversample: int = 10, power_iterations: int = 4, random_state: int = 0) -> None:
        # representation
        self.dim = dim
        self.max_features = max_features
        self.min_df = min_df
        # solver
        self.fit_sample = fit_sample
        self.oversample = oversample
        self.power_iterations = power_iterations
        self.random_state = random_state

    def fit(self, texts: Sequence[str]) -> "TfidfSvdEmbedder":
        """Learn vocabulary, idf and the SVD projection from `texts` (a seeded sample of at most
        `fit_sample`). Returns self."""
        if len(texts) < 2:
            raise ValueError(f"need at least 2 texts to fit the TF-IDF + SVD embedder, got {len(texts)}")
        rng = np.random.default_rng(self.random_state)
        sample = (list(texts) if len(texts) <= self.fit_sample
                  else [texts[i] for i in np.sort(rng.choice(len(texts), self.fit_sample, replace=False))])
        df = Counter()
        for text in sample:
            df.update(set(_tokens(text)))
        vocab = sorted((t for t, c in df.items() if c >= self.min_df), key=lambda t: (-df[t], t))[:self.max_features]
        if not vocab:
            raise ValueError("no token occurs often enough to fit the embedder; lower min_df")
        vocab.sort()
        self.vocabulary_ = np.array(vocab, dtype=f"U{max(len(t) for t in vocab)}")
        self._index = {t: i for i, t in enumerate(vocab)}
        n = len(sample)
        self.idf_ = (np.log((1 + n) / (1 + np.array([df[t] for t in vocab], dtype=np.float64))) + 1).astype(np.float32)
        x = self._tfidf(sample)
        k = min(self.dim, min(x.shape) - 1) if min(x.shape) > 1 else 1
        self.components_ = _randomized_svd_v(x, k, self.oversample, self.power_iterations, rng)
        return self

    def _tfidf(self, texts: Iterable[str]) -> sp.csr_matrix:
        index = self._index
        indptr, indices, data = [0], [], []
        for text in texts:
            counts = Counter(i for i in map(index.get, _tokens(text)) if i is not None)
            indices.extend(counts.keys())
            data.extend(counts.values())
            indptr.append(len(indices))
        x = sp.csr_matrix((np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32),
                           np.asarray(indptr, dtype=np.int64)), shape=(len(indptr) - 1, len(self.idf_)))
        x.data = (1 + np.log(x.data)) * self.idf_[x.indices]
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return sp.diags(1 / np.where(norms > 0, norms, 1)).astype(np.float32) @ x

    def encode(self, texts: Sequence[str], batch_size: int = 50_000) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        if not hasattr(self, "components_"):
            raise ValueError("the embedder is not fitted; call fit(texts) or load it")
        out = np.empty((len(texts), self.components_.shape[1]), dtype=np.float32)
        for begin in range(0, len(texts), batch_size):
            out[begin:begin + batch_size] = self._tfidf(texts[begin:begin + batch_size]) @ self.components_
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)

    @property
    def dimension(self) -> int:
        return int(self.components_.shape[1])

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for array in (self.vocabulary_, self.idf_, self.components_):
            digest.update(np.ascontiguousarray(array).tobytes())
        return f"{self.kind}-{digest.hexdigest()[:16]}"

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vocabulary": self.vocabulary_, "idf": self.idf_, "components": self.components_}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "TfidfSvdEmbedder":
        model = cls(dim=int(arrays["components"].shape[1]))
        model.vocabulary_ = np.asarray(arrays["vocabulary"])
        model.idf_ = np.asarray(arrays["idf"], dtype=np.float32)
        model.components_ = np.ascontiguousarray(arrays["components"], dtype=np.float32)
        if len(model.vocabulary_) != len(model.idf_) or len(model.idf_) != model.components_.shape[0]:
            raise ValueError(f"embedder arrays disagree: vocabulary {model.vocabulary_.shape}, idf {model.idf_.shape}, "
                             f"components {model.components_.shape}")
        model._index = {t: i for i, t in enumerate(model.vocabulary_.tolist())}
        return model


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of y's columns by CholeskyQR2 (two Gram-matrix passes): a few small
    GEMMs instead of a Householder QR of the tall matrix, and as accurate for these well-scaled y."""
    for _ in range(2):
        gram = y.T @ y
        lower = np.linalg.cholesky(gram + np.eye(len(gram)) * 1e-10 * max(np.trace(gram), 1e-30))
        y = y @ np.linalg.inv(lower).T  # y R^-1 with R = lower^T
    return y


def _randomized_svd_v(x: sp.csr_matrix, k: int, oversample: int, power_iterations: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Top-k right singular vectors of x (features x k, float32), signs fixed for determinism."""
    n_features = x.shape[1]
    omega = rng.standard_normal((n_features, min(k + oversample, n_features, x.shape[0])))
    x = x.astype(np.float64)
    q = _orthonormal(x @ omega)
    for _ in range(power_iterations):  # subspace iteration sharpens the spectrum (alg. 4.4)
        q = _orthonormal(x.T @ q)
        q = _orthonormal(x @ q)
    b = (x.T @ q).T  # small: (k + p) x features; its SVD from the eigenpairs of b b^T
    s2, u = np.linalg.eigh(b @ b.T)
    order = np.argsort(-s2)[:k]
    v = (b.T @ u[:, order]) / np.sqrt(np.maximum(s2[order], 1e-30))
    signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])])
    return np.ascontiguousarray(v * np.where(signs == 0, 1, signs), dtype=np.float32)


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory; never downloads (HF offline mode)."""

    kind = "sentence_transformers"

    def __init__(self, model_dir: str | Path, batch_size: int = 256) -> None:
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        if not (self.model_dir / "modules.json").exists():
            raise ValueError(f"{self.model_dir} is not a sentence-transformers model directory (no modules.json)")
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError("the sentence-transformers model needs the package sentence-transformers "
                              "(pip install sentence-transformers); without it the TF-IDF + SVD fallback is used") from exc
        self._model = SentenceTransformer(str(self.model_dir), device="cpu", local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)

    @property
    def dimension(self) -> int:
        return int(self._model.get_sentence_embedding_dimension())

    @property
    def fingerprint(self) -> str:
        config = self.model_dir / "config.json"
        digest = hashlib.sha256((config.read_bytes() if config.exists() else b"") + self.model_dir.name.encode())
        return f"{self.kind}-{self.model_dir.name}-{digest.hexdigest()[:12]}"

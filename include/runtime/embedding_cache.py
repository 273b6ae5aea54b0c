"""Product embeddings cached by text hash, one cache per embedder fingerprint, under ARTIFACT_ROOT.

    embedding_cache/<fingerprint>/cache.npz   hashes (S32, sorted) and vectors (float32)

Only texts whose hash is not in the cache are embedded again; a product whose name or
description changed gets a new hash and so a new embedding. The cache is rewritten as a whole
(temporary file + os.replace) holding exactly the current catalogue's texts, so it does not
grow with deleted products. A damaged cache is dropped with a warning: it is only a cache.
"""
from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import numpy as np

from include.runtime import artifacts

log = logging.getLogger(__name__)


class EmbeddingCache:
    def __init__(self, fingerprint: str, root: Path | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", fingerprint):
            raise ValueError(f"fingerprint {fingerprint!r}: use letters, digits, _ . -")
        self.path = Path(root if root is not None else artifacts.root()) / "embedding_cache" / fingerprint / "cache.npz"

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.path.exists():
            return np.empty(0, dtype="S32"), None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return data["hashes"], data["vectors"]
        except Exception as exc:  # noqa: BLE001 - any damage means: recompute
            log.warning("embedding cache %s unreadable (%s); embedding everything again", self.path, exc)
            return np.empty(0, dtype="S32"), None

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, the cached vectors of the found hashes in order)."""
        cached, vectors = self.load()
        if vectors is None or not len(cached):
            return np.zeros(len(hashes), bool), None
        pos = np.clip(np.searchsorted(cached, hashes), 0, len(cached) - 1)
        found = cached[pos] == hashes
        return found, vectors[pos[found]]

    def save(self, hashes: np.ndarray, vectors: np.ndarray) -> int:
        """Replace the cache with these (hash, vector) pairs (duplicates collapsed); entries written."""
        unique, first = np.unique(hashes, return_index=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".cache-{uuid.uuid4().hex}.npz")
        with open(tmp, "wb") as f:
            np.savez(f, hashes=unique, vectors=np.ascontiguousarray(vectors[first], dtype=np.float32))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(unique)

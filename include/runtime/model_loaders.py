"""Loaders of the promoted models, for other jobs and for a serving process.

- `load_als()`: the promoted cf_training model (factors and id maps), checksums verified.
- `load_product_index()`: the current FAISS product index with its id map.
- `similar_products(product_id, k)`: nearest products by embedding; a serving process calls it
  repeatedly and the index is reloaded only when the pointer moves to another version.

A missing model raises LookupError (nothing promoted yet), a damaged one ArtifactError: callers
decide whether to go on without it (weekly_recs does) or to fail.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from include.runtime.model_store import ArtifactError, ModelStore  # noqa: F401  (re-exported for callers)

CF_MODEL = "cf_als"
FAISS_MODEL = "faiss_products"
EMBEDDER_MODEL = "product_embedder"


@dataclass
class ALSFactors:
    version: str
    user_ids: Any  # int64, sorted; row i of user_factors belongs to user_ids[i]
    item_ids: Any
    user_factors: Any  # float32 users x factors
    item_factors: Any
    metadata: dict = field(default_factory=dict)


def load_als(version: str | None = None, mmap: bool = False) -> ALSFactors:
    """The promoted (or the given) ALS model."""
    arrays, meta = ModelStore(CF_MODEL).load(version, mmap=mmap)
    return ALSFactors(meta["version"], arrays["user_ids"], arrays["item_ids"], arrays["user_factors"],
                      arrays["item_factors"], meta)


@dataclass
class ProductIndex:
    version: str
    index: Any  # a faiss index; row i is product_ids[i]
    product_ids: Any
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        import numpy as np

        self._order = np.argsort(self.product_ids, kind="stable")

    def row(self, product_id: int) -> int | None:
        import numpy as np

        pos = int(np.searchsorted(self.product_ids[self._order], product_id))
        if pos < len(self._order) and int(self.product_ids[self._order[pos]]) == int(product_id):
            return int(self._order[pos])
        return None

    def similar(self, product_id: int, k: int = 10) -> list[tuple[int, float]]:
        """The k products nearest to `product_id` (itself excluded) as (product_id, cosine); [] if unknown."""
        row = self.row(product_id)
        if row is None:
            return []
        vector = self.index.reconstruct(row).reshape(1, -1)
        scores, rows = self.index.search(vector, k + 1)
        return [(int(self.product_ids[r]), round(float(s), 6)) for s, r in zip(scores[0], rows[0])
                if r >= 0 and r != row][:k]


def load_product_index(version: str | None = None) -> ProductIndex:
    """The current (or the given) product index, its search parameter as validated."""
    from include.models import vector_index

    arrays, meta = ModelStore(FAISS_MODEL).load(version)
    index = vector_index.deserialize(arrays["index"])
    import faiss

    if isinstance(index, faiss.IndexIVF):
        index.make_direct_map()  # reconstruct(row) for similar()
        index.nprobe = int(meta["index"]["params"].get("nprobe", index.nprobe))
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(meta["index"]["params"].get("efSearch", index.hnsw.efSearch))
    if index.ntotal != len(arrays["product_ids"]):
        raise ArtifactError(f"{FAISS_MODEL} version {meta['version']}: index holds {index.ntotal} vectors but the id "
                            f"map {len(arrays['product_ids'])}")
    return ProductIndex(meta["version"], index, arrays["product_ids"], meta)


_serving: dict[str, ProductIndex] = {}
_lock = threading.Lock()


def similar_products(product_id: int, k: int = 10) -> list[tuple[int, float]]:
    """For a long-running server: reload the index only when CURRENT.json names another version."""
    current = ModelStore(FAISS_MODEL).current()
    if current is None:
        raise LookupError("no product index promoted yet; run the faiss_rebuild DAG")
    with _lock:
        loaded = _serving.get("index")
        if loaded is None or loaded.version != current:
            _serving["index"] = loaded = load_product_index(current)
    return loaded.similar(product_id, k)

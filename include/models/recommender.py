"""Hybrid batch recommender: repeat cycles + item co-purchase + attribute similarity + discovery.

The model is split like ``benfred/implicit``: hyperparameters in ``__init__``, ``fit`` learns the
global state from every order up to ``as_of`` (attributes ending in ``_``), ``recommend`` scores a
shard of customers from just their own order history. All scoring is vectorised over the shard
with sparse matrices; nothing loops per customer.

Components, each scaled to [0, 1] per customer before they are blended:

* ``repeat``        -- the customer's own products: time-decayed purchase frequency (half-life
                       ``half_life_days``, as in TIFU-KNN) times a due-ness factor from the
                       product's purchase cycle (mean interval between orders vs. days since the
                       last order, looking ``horizon_days`` ahead).
* ``collaborative`` -- the decayed purchase vector times a top-k pruned item-item co-purchase
                       cosine similarity (customers who bought i also bought j); optionally mixed
                       with the cosine between the customer's ALS taste vector and item factors.
* ``similar``       -- products the customer has not bought, in the categories, brands and price
                       bands the customer buys, weighted by popularity.
* ``discovery``     -- products the customer has not bought: popular, trending (recent window vs.
                       the window before) and new products, boosted in the customer's categories.

Segments (``days`` = days before ``as_of``) choose the blend weights ``segment_weights``:

* ``new``        -- no order in the shard, or first order within ``new_days`` and fewer than
                    ``loyal_min_orders`` orders: discovery-heavy.
* ``dormant``    -- last order more than ``dormant_days`` ago: balanced.
* ``loyal``      -- at least ``loyal_min_orders`` orders: repeat-heavy.
* ``occasional`` -- everything else: between loyal and dormant.

A customer without history is scored by discovery alone. Every customer gets exactly ``top_n``
distinct orderable (catalogue) products, fewer only when the catalogue is smaller.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

FIT_ORDER_COLUMNS = ("customer_id", "product_id", "order_id", "order_date")  # fit learns who bought what when
ORDER_COLUMNS = (*FIT_ORDER_COLUMNS, "quantity")  # recommend also predicts the quantity
PRODUCT_COLUMNS = ("product_id", "name", "category")
COMPONENTS = ("repeat", "collaborative", "similar", "discovery")
SEGMENTS = ("loyal", "occasional", "dormant", "new")
# (repeat, collaborative, similar, discovery) per segment; normalised to sum to 1.
DEFAULT_SEGMENT_WEIGHTS = {
    "loyal": (0.76, 0.20, 0.02, 0.02),
    "occasional": (0.74, 0.20, 0.03, 0.03),
    "dormant": (0.40, 0.30, 0.15, 0.15),
    "new": (0.25, 0.20, 0.20, 0.35),
}
OUTPUT_COLUMNS = ["customer_id", "rank", "product_id", "score", "source", "product_name", "category",
                  "predicted_quantity", "last_purchased", "purchase_frequency_days", "segment"]
_DAY = np.timedelta64(1, "D")


class HybridRecommender:
    """Top-n product recommendations for batch jobs; see the module docstring for the model."""

    def __init__(
        self,
        top_n: int = 25,
        # repeat: decayed frequency and purchase cycles
        half_life_days: float = 120.0,
        due_weight: float = 0.3,
        horizon_days: float = 7.0,
        # collaborative: item-item co-purchase and optional ALS factors
        neighbours: int = 100,
        similarity_alpha: float = 0.5,
        similarity_window_days: float | None = None,
        als_weight: float = 0.3,
        candidates: int = 50,  # per component and customer, at least top_n
        # similar: attributes of what the customer buys
        price_bands: int = 5,
        pool_per_category: int = 30,
        # discovery: popularity, trending and new products
        popularity_days: float = 90.0,
        trending_days: float = 28.0,
        new_product_days: float = 30.0,
        discovery_mix: tuple[float, float, float] = (0.6, 0.25, 0.15),
        discovery_floor: float = 0.5,
        momentum_power: float = 0.6,
        propensity_power: float = 0.3,
        # segments and blend
        loyal_min_orders: int = 4,
        new_days: float = 30.0,
        dormant_days: float = 90.0,
        segment_weights: dict | None = None,
        hybrid_share: float = 0.5,
        # execution
        batch_size: int = 2000,
    ):
        self.top_n = int(top_n)
        self.half_life_days = float(half_life_days)
        self.due_weight = float(due_weight)
        self.horizon_days = float(horizon_days)
        self.neighbours = int(neighbours)
        self.similarity_alpha = float(similarity_alpha)
        self.similarity_window_days = None if similarity_window_days is None else float(similarity_window_days)
        self.als_weight = float(als_weight)
        self.candidates = int(candidates)
        self.price_bands = int(price_bands)
        self.pool_per_category = int(pool_per_category)
        self.popularity_days = float(popularity_days)
        self.trending_days = float(trending_days)
        self.new_product_days = float(new_product_days)
        self.discovery_mix = tuple(float(x) for x in discovery_mix)
        self.discovery_floor = float(discovery_floor)
        self.momentum_power = float(momentum_power)
        self.propensity_power = float(propensity_power)
        self.loyal_min_orders = int(loyal_min_orders)
        self.new_days = float(new_days)
        self.dormant_days = float(dormant_days)
        weights = dict(DEFAULT_SEGMENT_WEIGHTS)
        weights.update(segment_weights or {})
        self.segment_weights = {k: tuple(float(x) for x in v) for k, v in weights.items()}
        self.hybrid_share = float(hybrid_share)
        self.batch_size = int(batch_size)
        self._check_params()

    def _check_params(self):
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")
        if self.half_life_days <= 0 or self.horizon_days < 0:
            raise ValueError("half_life_days must be > 0 and horizon_days >= 0")
        if not 0 <= self.due_weight <= 1 or not 0 <= self.als_weight <= 1:
            raise ValueError("due_weight and als_weight must be in [0, 1]")
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")
        if self.neighbours < 1 or self.pool_per_category < 0 or self.price_bands < 1:
            raise ValueError("neighbours and price_bands must be >= 1, pool_per_category >= 0")
        if len(self.discovery_mix) != 3 or min(self.discovery_mix) < 0 or sum(self.discovery_mix) <= 0:
            raise ValueError("discovery_mix must be 3 non-negative weights (popular, trending, new)")
        if set(self.segment_weights) != set(SEGMENTS):
            raise ValueError(f"segment_weights must have exactly the segments {SEGMENTS}")
        for seg, w in self.segment_weights.items():
            if len(w) != len(COMPONENTS) or min(w) < 0 or sum(w) <= 0:
                raise ValueError(f"segment_weights[{seg!r}] must be {len(COMPONENTS)} non-negative "
                                 f"weights for {COMPONENTS}, got {w}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    # ------------------------------------------------------------------ fit
    def fit(self, orders: pd.DataFrame, products: pd.DataFrame, as_of,
            item_factors: np.ndarray | None = None,
            factor_item_ids: np.ndarray | None = None) -> "HybridRecommender":
        """Learn the global state from all orders up to ``as_of`` and the product catalogue.

        ``item_factors`` (n x f, e.g. implicit ALS ``item_factors``) are optional and need
        ``factor_item_ids`` (n product ids, one per row).
        """
        as_of = _timestamp(as_of)
        _check_frame(orders, FIT_ORDER_COLUMNS, "orders")
        _check_frame(products, PRODUCT_COLUMNS, "products")
        if (item_factors is None) != (factor_item_ids is None):
            raise ValueError("item_factors and factor_item_ids must be given together")

        catalogue = _catalogue(products, as_of, self.price_bands)
        self.item_ids_ = catalogue["product_id"].to_numpy(np.int64)
        self.item_names_ = catalogue["name"].to_numpy(object)
        self.categories_, self.item_category_ = _codes(catalogue["category"])
        self.brands_, self.item_brand_ = _codes(catalogue["brand"])
        self.item_band_ = catalogue["band"].to_numpy(np.int32)
        self.as_of_ = as_of
        n_items = len(self.item_ids_)

        cust, item, order, age, _ = _order_arrays(orders, as_of, self.item_ids_)
        known = item >= 0
        cust, item, order, age = cust[known], item[known], order[known], age[known]

        self.popularity_, self.trending_, self.momentum_ = _popularity(
            cust, item, age, n_items, self.popularity_days, self.trending_days)
        self.propensity_ = _repeat_propensity(cust, item, order, n_items)
        created = catalogue["created_at"].to_numpy("datetime64[ns]")
        created_age = (np.datetime64(as_of.to_datetime64(), "ns") - created) / _DAY
        newness = np.where(np.isnan(created_age), 0.0,
                           np.clip(1.0 - created_age / max(self.new_product_days, 1e-9), 0.0, 1.0))
        self.newness_ = np.where(created_age >= 0, newness, 0.0)
        mix = np.asarray(self.discovery_mix) / sum(self.discovery_mix)
        base = mix[0] * self.popularity_ + mix[1] * self.trending_ + mix[2] * self.newness_
        self.discovery_base_ = base / base.max() if base.max() > 0 else base

        window = np.inf if self.similarity_window_days is None else self.similarity_window_days
        recent = age <= window
        self.similarity_ = _item_similarity(cust[recent], item[recent], n_items, self.neighbours,
                                            self.similarity_alpha)
        self.pool_ = _category_pool(self.item_category_, len(self.categories_),
                                    self.popularity_, self.discovery_base_, self.pool_per_category)
        n_global = min(n_items, self.top_n * 2)
        rank = np.lexsort((self.item_ids_, -self.popularity_, -self.discovery_base_))
        self.global_items_ = np.sort(rank[:n_global]).astype(np.int64)

        if item_factors is not None:
            self.item_factors_ = _align_factors(item_factors, factor_item_ids, self.item_ids_)
        else:
            self.item_factors_ = None
        return self

    # ------------------------------------------------------------ recommend
    def recommend(self, orders: pd.DataFrame, customer_ids: np.ndarray, as_of) -> pd.DataFrame:
        """Top-n products for each of ``customer_ids`` from their order history ``orders``.

        Returns one row per recommendation with the columns ``OUTPUT_COLUMNS``, customers in the
        given order, ranks 1..n.
        """
        self._check_fitted()
        as_of = _timestamp(as_of)
        _check_frame(orders, ORDER_COLUMNS, "orders")
        customer_ids = np.asarray(customer_ids)
        if customer_ids.ndim != 1:
            raise ValueError(f"customer_ids must be a 1-d array, got shape {customer_ids.shape}")
        if customer_ids.size and not np.issubdtype(customer_ids.dtype, np.integer):
            raise ValueError(f"customer_ids must be integers, got dtype {customer_ids.dtype}")
        customer_ids = customer_ids.astype(np.int64)
        if len(np.unique(customer_ids)) != len(customer_ids):
            raise ValueError("customer_ids must be unique")
        if len(customer_ids) == 0:
            return _empty_output()

        index = pd.Index(customer_ids)
        o = orders[orders["customer_id"].isin(customer_ids)]
        cust, item, order, age, kept = _order_arrays(o, as_of, self.item_ids_, index)
        qty = pd.to_numeric(o["quantity"], errors="coerce").to_numpy(np.float64)[kept]
        profile = _customer_profile(cust, order, age, len(customer_ids))
        segment = _segments(profile, self.loyal_min_orders, self.new_days, self.dormant_days)
        hist = _history(cust, item, order, age, qty, self.half_life_days, self.horizon_days,
                        self.due_weight)
        frames = []
        for start in range(0, len(customer_ids), self.batch_size):
            stop = min(start + self.batch_size, len(customer_ids))
            frames.append(self._recommend_batch(hist, segment, start, stop))
        rec = pd.concat(frames, ignore_index=True)
        return self._output(rec, customer_ids, segment, hist)

    def _recommend_batch(self, hist: dict, segment: np.ndarray, start: int, stop: int) -> pd.DataFrame:
        n_items = len(self.item_ids_)
        n = stop - start
        lo, hi = np.searchsorted(hist["cust"], [start, stop])
        rows, cols = hist["cust"][lo:hi] - start, hist["item"][lo:hi]
        shape = (n, n_items)
        boost = self.momentum_ ** self.momentum_power
        decayed = sp.csr_matrix((hist["decayed"][lo:hi], (rows, cols)), shape=shape)
        repeat_raw = hist["repeat"][lo:hi] * boost[cols] * self.propensity_[cols] ** self.propensity_power
        repeat = _row_max_scale(sp.csr_matrix((repeat_raw, (rows, cols)), shape=shape))
        collab = _row_max_scale((decayed @ self.similarity_) @ sp.diags(boost))
        collab_top = _prune_rows(collab, max(self.candidates, self.top_n))

        n_cat = len(self.categories_)
        cat_onehot = sp.csr_matrix((np.ones(n_items), (np.arange(n_items), self.item_category_)),
                                   shape=(n_items, n_cat))
        cat_aff_sp = _row_max_scale(decayed @ cat_onehot)
        cat_aff = cat_aff_sp.toarray()
        brand_aff = _affinity(decayed, self.item_brand_, len(self.brands_))
        band_aff = _affinity(decayed, self.item_band_, self.price_bands + 1)
        pooled = _prune_rows(_row_max_scale(cat_aff_sp @ self.pool_), max(self.candidates, self.top_n))
        everyone = sp.csr_matrix((np.ones(n * len(self.global_items_)),
                                  (np.repeat(np.arange(n), len(self.global_items_)),
                                   np.tile(self.global_items_, n))), shape=shape)

        union = _binary(_binary(repeat) + _binary(collab_top) + _binary(pooled) + everyone)
        union.sort_indices()
        r = np.repeat(np.arange(n), np.diff(union.indptr))
        c = union.indices.astype(np.int64)
        comp = np.zeros((len(c), len(COMPONENTS)), dtype=np.float64)
        comp[:, 0] = _on_pattern(repeat, union)
        knn = _lookup(collab, r, c)
        if self.item_factors_ is not None and self.als_weight > 0:
            knn = (1 - self.als_weight) * knn + self.als_weight * _factor_cosine(
                decayed, self.item_factors_, r, c)
        comp[:, 1] = knn
        hkey = rows * n_items + cols
        ukey = r * n_items + c
        not_owned = ~_sorted_member(ukey, hkey)
        cat_c = cat_aff[r, self.item_category_[c]]
        attr = 0.5 * cat_c + 0.25 * brand_aff[r, self.item_brand_[c]] + 0.25 * band_aff[r, self.item_band_[c]]
        comp[:, 2] = np.where(not_owned & (cat_c > 0), attr * np.sqrt(self.popularity_[c]), 0.0)
        disc = self.discovery_base_[c] * (self.discovery_floor + (1 - self.discovery_floor) * cat_c)
        comp[:, 3] = np.where(not_owned, disc, 0.0)

        seg = segment[start:stop]
        has_history = np.bincount(rows, minlength=n) > 0
        weights = np.array([self.segment_weights[s] for s in SEGMENTS], dtype=np.float64)
        weights /= weights.sum(axis=1, keepdims=True)
        w = weights[pd.Categorical(seg, categories=SEGMENTS).codes]
        w[~has_history] = (0.0, 0.0, 0.0, 1.0)
        contrib = comp * w[r]
        score = np.clip(contrib.sum(axis=1), 0.0, 1.0)

        # top-n per row: a linear histogram cut to a few more than top_n, then one exact sort
        # on (row, -score, -popularity, product id)
        near = _top_mask(r, score, n, self.top_n)
        r, c, score, contrib = r[near], c[near], score[near], contrib[near]
        tiebreak = self.popularity_[c] * 1e-9
        order = np.lexsort((c, -(score + tiebreak), r))
        r, c, score, contrib = r[order], c[order], score[order], contrib[order]
        first = np.searchsorted(r, np.arange(n))
        pos = np.arange(len(r)) - first[r]
        keep = pos < self.top_n
        r, c, score, contrib, pos = r[keep], c[keep], score[keep], contrib[keep], pos[keep]

        best = contrib.argmax(axis=1)
        share = np.divide(contrib.max(axis=1), contrib.sum(axis=1),
                          out=np.ones(len(r)), where=contrib.sum(axis=1) > 0)
        source = np.asarray(COMPONENTS + ("hybrid",), dtype=object)[
            np.where(share < self.hybrid_share, len(COMPONENTS), best)]
        source[contrib.sum(axis=1) <= 0] = "discovery"
        return pd.DataFrame({"row": r + start, "item": c, "rank": pos + 1, "score": score,
                             "source": source})

    def _output(self, rec: pd.DataFrame, customer_ids, segment, hist) -> pd.DataFrame:
        key = rec["row"].to_numpy(np.int64) * len(self.item_ids_) + rec["item"].to_numpy(np.int64)
        hkey = hist["cust"] * len(self.item_ids_) + hist["item"]
        at = np.searchsorted(hkey, key)
        at_c = np.minimum(at, max(len(hkey) - 1, 0))
        found = (at < len(hkey)) & (hkey[at_c] == key) if len(hkey) else np.zeros(len(key), bool)
        pick = lambda arr, fill: np.where(found, arr[at_c] if len(arr) else fill, fill)  # noqa: E731
        last_age = pick(hist["last_age"], np.nan)
        last = np.datetime64(self.as_of_.to_datetime64(), "ns") - (
            np.nan_to_num(last_age) * 86400e9).astype("timedelta64[ns]")
        item = rec["item"].to_numpy()
        return pd.DataFrame({
            "customer_id": customer_ids[rec["row"].to_numpy()],
            "rank": rec["rank"].to_numpy(np.int64),
            "product_id": self.item_ids_[item],
            "score": rec["score"].to_numpy(np.float64),
            "source": rec["source"].to_numpy(object),
            "product_name": self.item_names_[item],
            "category": self.categories_[self.item_category_[item]],
            "predicted_quantity": pick(hist["quantity"], np.nan),
            "last_purchased": pd.to_datetime(np.where(found, last, np.datetime64("NaT", "ns"))),
            "purchase_frequency_days": pick(hist["interval"], np.nan),
            "segment": segment[rec["row"].to_numpy()],
        })[OUTPUT_COLUMNS]

    # ------------------------------------------------------------ save/load
    def save(self, directory) -> None:
        """Write the fitted state to ``directory`` (params.json, state.npz, items.parquet)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        params = {k: v for k, v in self.__dict__.items() if not k.endswith("_")}
        params["discovery_mix"] = list(params["discovery_mix"])
        params["segment_weights"] = {k: list(v) for k, v in params["segment_weights"].items()}
        meta = {"params": params, "as_of": self.as_of_.isoformat(),
                "categories": [str(x) for x in self.categories_], "brands": [str(x) for x in self.brands_]}
        (directory / "params.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        arrays = {
            "item_ids": self.item_ids_, "item_category": self.item_category_,
            "item_brand": self.item_brand_, "item_band": self.item_band_,
            "popularity": self.popularity_, "trending": self.trending_, "newness": self.newness_,
            "momentum": self.momentum_, "propensity": self.propensity_,
            "discovery_base": self.discovery_base_, "global_items": self.global_items_,
            "sim_indptr": self.similarity_.indptr, "sim_indices": self.similarity_.indices,
            "sim_data": self.similarity_.data, "pool_indptr": self.pool_.indptr,
            "pool_indices": self.pool_.indices, "pool_data": self.pool_.data,
        }
        if self.item_factors_ is not None:
            arrays["item_factors"] = self.item_factors_
        np.savez(directory / "state.npz", **arrays)
        pd.DataFrame({"product_id": self.item_ids_, "name": self.item_names_.astype(str)}).to_parquet(
            directory / "items.parquet", index=False)

    @classmethod
    def load(cls, directory) -> "HybridRecommender":
        directory = Path(directory)
        meta = json.loads((directory / "params.json").read_text())
        model = cls(**meta["params"])
        with np.load(directory / "state.npz", allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        items = pd.read_parquet(directory / "items.parquet")
        if not np.array_equal(items["product_id"].to_numpy(np.int64), a["item_ids"]):
            raise ValueError(f"{directory}: items.parquet and state.npz disagree on the products")
        n = len(a["item_ids"])
        model.as_of_ = pd.Timestamp(meta["as_of"])
        model.item_ids_ = a["item_ids"]
        model.item_names_ = items["name"].to_numpy(object)
        model.categories_ = np.asarray(meta["categories"], dtype=object)
        model.brands_ = np.asarray(meta["brands"], dtype=object)
        model.item_category_, model.item_brand_, model.item_band_ = (
            a["item_category"], a["item_brand"], a["item_band"])
        model.popularity_, model.trending_, model.newness_ = a["popularity"], a["trending"], a["newness"]
        model.momentum_, model.propensity_ = a["momentum"], a["propensity"]
        model.discovery_base_, model.global_items_ = a["discovery_base"], a["global_items"]
        model.similarity_ = sp.csr_matrix((a["sim_data"], a["sim_indices"], a["sim_indptr"]), shape=(n, n))
        model.pool_ = sp.csr_matrix((a["pool_data"], a["pool_indices"], a["pool_indptr"]),
                                    shape=(len(model.categories_), n))
        model.item_factors_ = a.get("item_factors")
        return model

    def _check_fitted(self):
        if not hasattr(self, "item_ids_"):
            raise ValueError("this HybridRecommender is not fitted; call fit() or load() first")


# ===================================================================== helpers
def _timestamp(value) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"as_of must be a date or datetime, got {value!r}") from exc
    if ts is pd.NaT:
        raise ValueError("as_of must be a date or datetime, got NaT")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def _check_frame(frame, columns, name):
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame with columns {list(columns)}, "
                         f"got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing columns {missing}; expected at least {list(columns)}, "
                         f"got {list(frame.columns)}")


def _dates(series: pd.Series) -> np.ndarray:
    s = pd.to_datetime(series)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy("datetime64[ns]")


def _codes(values: pd.Series):
    filled = values.astype(object).where(values.notna(), "unknown").astype(str)
    codes, uniques = pd.factorize(filled, sort=True)
    return np.asarray(uniques, dtype=object), codes.astype(np.int32)


def _catalogue(products: pd.DataFrame, as_of, bands: int) -> pd.DataFrame:
    p = products.drop_duplicates("product_id", keep="last").copy()
    p["product_id"] = pd.to_numeric(p["product_id"], errors="raise").astype(np.int64)
    for col, fill in (("brand", "unknown"), ("price", np.nan), ("created_at", pd.NaT)):
        if col not in p.columns:
            p[col] = fill
    p["created_at"] = _dates(p["created_at"])
    p = p[~(p["created_at"] > np.datetime64(as_of.to_datetime64(), "ns"))]
    p = p.sort_values("product_id").reset_index(drop=True)
    if len(p) == 0:
        raise ValueError("products has no product created on or before as_of; nothing to recommend")
    price = pd.to_numeric(p["price"], errors="coerce").to_numpy(np.float64)
    band = np.full(len(p), bands, dtype=np.int32)  # band `bands` = unknown price
    ok = np.isfinite(price)
    if ok.any():
        edges = np.unique(np.quantile(price[ok], np.linspace(0, 1, bands + 1)[1:-1]))
        band[ok] = np.searchsorted(edges, price[ok], side="right")
    p["band"] = band
    p["name"] = p["name"].astype(object).where(p["name"].notna(), "")
    return p


def _order_arrays(orders: pd.DataFrame, as_of, item_ids: np.ndarray, customers: pd.Index | None = None):
    """Integer arrays of the orders up to ``as_of``: customer, item index (-1 unknown), order, age."""
    date = _dates(orders["order_date"]) if len(orders) else np.zeros(0, "datetime64[ns]")
    keep = ~np.isnat(date) & (date <= np.datetime64(as_of.to_datetime64(), "ns"))
    pid = orders["product_id"].to_numpy()[keep].astype(np.int64, copy=False)
    cid = orders["customer_id"].to_numpy()[keep].astype(np.int64, copy=False)
    if customers is None:
        cust = pd.factorize(cid)[0].astype(np.int64)
    else:
        cust = customers.get_indexer(cid).astype(np.int64)
    pos = np.searchsorted(item_ids, pid)
    pos_c = np.minimum(pos, len(item_ids) - 1)
    item = np.where(item_ids[pos_c] == pid, pos_c, -1).astype(np.int64)
    order = orders["order_id"].to_numpy()[keep].astype(np.int64, copy=False)
    age = (np.datetime64(as_of.to_datetime64(), "ns") - date[keep]) / _DAY
    return cust, item, order, age.astype(np.float64, copy=False), keep


def _popularity(cust, item, age, n_items, popularity_days, trending_days):
    """Distinct recent customers per item (scaled to max 1), and trending growth (scaled)."""
    def distinct_customers(mask):
        key = _distinct(cust[mask] * n_items + item[mask])
        return np.bincount(key % n_items, minlength=n_items).astype(np.float64)

    pop = distinct_customers(age <= popularity_days)
    pop_all = distinct_customers(np.ones(len(age), bool))
    pop = pop + 1e-3 * pop_all  # items not sold recently still rank by their all-time buyers
    recent = distinct_customers(age <= trending_days)
    before = distinct_customers((age > trending_days) & (age <= 2 * trending_days))
    trend = np.maximum(recent - before, 0.0) / np.sqrt(before + 1.0)
    # momentum: recent buyers vs. the rate of the longer popularity window (seasonality)
    long_run = (pop - 1e-3 * pop_all) * trending_days / max(popularity_days, 1e-9)
    momentum = np.clip((recent + 1.0) / (long_run + 1.0), 0.25, 4.0)
    return _scale(pop), _scale(trend), momentum


def _repeat_propensity(cust, item, order, n_items, prior=5.0):
    """Share of an item's buyers who bought it in two or more orders, shrunk to the mean,
    divided by the mean (1 = an average item)."""
    if len(cust) == 0:
        return np.ones(n_items)
    # distinct orders per customer-item pair: hashing, not np.unique(axis=1), which sorts rows
    lines = pd.DataFrame({"pair": cust * n_items + item, "order": order}).drop_duplicates()
    n_orders_by_pair = lines["pair"].value_counts(sort=False)
    pair, n_orders = n_orders_by_pair.index.to_numpy(), n_orders_by_pair.to_numpy()
    it = pair % n_items
    buyers = np.bincount(it, minlength=n_items).astype(np.float64)
    repeaters = np.bincount(it[n_orders >= 2], minlength=n_items).astype(np.float64)
    mean = repeaters.sum() / max(buyers.sum(), 1.0)
    rate = (repeaters + prior * mean) / (buyers + prior)
    return rate / max(mean, 1e-9)


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values. numpy 2.4's np.unique takes a hash path that is ~50x slower than
    a sort on millions of distinct int64 keys (28 s vs 0.4 s for 2.4M here)."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


def _scale(x):
    m = x.max() if len(x) else 0.0
    return x / m if m > 0 else x


def _item_similarity(cust, item, n_items, k, alpha, block=2e6):
    """Top-k pruned co-purchase similarity  C_ij / (n_i^alpha n_j^(1-alpha)), zero diagonal.

    Customers are weighted by 1/log2(1 + distinct items) so that wholesalers who buy everything
    do not make everything similar. Computed in row blocks of about ``block`` co-occurrences
    each, which bounds its memory (2e6: as fast as larger blocks, or faster, on 6.4M lines).
    """
    if len(cust) == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    key = _distinct(cust * n_items + item)
    c, i = key // n_items, key % n_items
    c = pd.factorize(c)[0]
    n_cust = c.max() + 1
    x = sp.csr_matrix((np.ones(len(c)), (c, i)), shape=(n_cust, n_items))
    user_w = 1.0 / np.log2(1.0 + np.diff(x.indptr))
    xw = sp.diags(user_w) @ x
    xt = x.T.tocsr()
    counts = np.asarray(x.sum(axis=0)).ravel()
    inv_src = np.where(counts > 0, counts, 1.0) ** -alpha
    inv_dst = np.where(counts > 0, counts, 1.0) ** -(1.0 - alpha)
    cost = xt @ np.diff(x.indptr).astype(np.float64)  # co-occurrence entries per item row
    ends = np.searchsorted(np.cumsum(cost), np.arange(1, int(cost.sum() // block) + 2) * block)
    bounds = np.unique(np.concatenate([[0], np.minimum(ends + 1, n_items), [n_items]]))
    rows, cols, vals = [], [], []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        block = (xt[start:stop] @ xw).tocsr()
        r = np.repeat(np.arange(stop - start), np.diff(block.indptr))
        v = block.data * inv_src[start + r] * inv_dst[block.indices]
        v[block.indices == start + r] = 0.0  # no self-similarity
        # linear histogram cut to about k per row, then the exact top k on what is left
        peak = np.zeros(stop - start)
        np.maximum.at(peak, r, v)
        keep = (v > 0) & _top_mask(r, v / np.maximum(peak[r], 1e-300), stop - start, k)
        r, c, v = r[keep], block.indices[keep], v[keep]
        order = np.lexsort((-v, r))
        r, c, v = r[order], c[order], v[order]
        pos = np.arange(len(r)) - np.searchsorted(r, r)
        keep = pos < k
        rows.append(r[keep].astype(np.int64) + start)
        cols.append(c[keep].astype(np.int64))
        vals.append(v[keep])
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    sim = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n_items, n_items))
    sim.sort_indices()
    return sim


def _category_pool(item_category, n_cat, popularity, discovery_base, per_category):
    """category x item matrix marking the top ``per_category`` items of each category by
    popularity and by discovery score (the candidates of the similar/discovery components)."""
    if per_category == 0 or len(item_category) == 0:
        return sp.csr_matrix((n_cat, len(item_category)), dtype=np.float64)
    picked = []
    for score in (popularity, discovery_base):
        order = np.lexsort((-score, item_category))
        cat = item_category[order]
        first = np.searchsorted(cat, np.arange(n_cat))
        pos = np.arange(len(order)) - first[cat]
        picked.append(order[pos < per_category])
    items = _distinct(np.concatenate(picked))
    pool = sp.csr_matrix((np.ones(len(items)), (item_category[items], items)),
                         shape=(n_cat, len(item_category)))
    pool.sort_indices()
    return pool


def _align_factors(item_factors, factor_item_ids, item_ids):
    f = np.asarray(item_factors, dtype=np.float32)
    ids = np.asarray(factor_item_ids).astype(np.int64)
    if f.ndim != 2 or len(ids) != f.shape[0]:
        raise ValueError(f"item_factors must be (n_items, n_factors) with one factor_item_ids per row; "
                         f"got {f.shape} and {ids.shape}")
    out = np.zeros((len(item_ids), f.shape[1]), dtype=np.float32)
    pos = np.searchsorted(item_ids, ids)
    pos_c = np.minimum(pos, len(item_ids) - 1)
    ok = item_ids[pos_c] == ids
    out[pos_c[ok]] = f[ok]
    return out


def _customer_profile(cust, order, age, n_cust):
    """Per customer: number of distinct orders, days since first and last order (NaN if none)."""
    n_orders = np.zeros(n_cust)
    first = np.full(n_cust, np.nan)
    last = np.full(n_cust, np.nan)
    if len(cust):
        orders = pd.DataFrame({"cust": cust, "order": order}).drop_duplicates()["cust"].to_numpy()
        n_orders = np.bincount(orders, minlength=n_cust).astype(np.float64)
        first_v = np.full(n_cust, -np.inf)
        np.maximum.at(first_v, cust, age)
        last_v = np.full(n_cust, np.inf)
        np.minimum.at(last_v, cust, age)
        seen = n_orders > 0
        first[seen], last[seen] = first_v[seen], last_v[seen]
    return {"n_orders": n_orders, "first_age": first, "last_age": last}


def _segments(profile, loyal_min_orders, new_days, dormant_days):
    n, first, last = profile["n_orders"], profile["first_age"], profile["last_age"]
    seg = np.full(len(n), "occasional", dtype=object)
    seg[n >= loyal_min_orders] = "loyal"
    seg[(first <= new_days) & (n < loyal_min_orders)] = "new"
    seg[last > dormant_days] = "dormant"
    seg[n == 0] = "new"
    return seg


def _history(cust, item, order, age, qty, half_life, horizon, due_weight):
    """Per (customer, item) repeat statistics, sorted by customer * n + item."""
    known = item >= 0
    df = pd.DataFrame({"c": cust[known], "i": item[known], "o": order[known], "age": age[known],
                       "q": qty[known]})
    per_order = df.groupby(["c", "i", "o"], sort=False).agg(age=("age", "min"), q=("q", "sum")).reset_index()
    per_order["w"] = np.exp(-np.log(2.0) * per_order["age"].to_numpy() / half_life)
    per_order["wq"] = per_order["w"] * per_order["q"]
    g = per_order.groupby(["c", "i"], sort=True).agg(
        n=("o", "size"), last=("age", "min"), first=("age", "max"), decayed=("w", "sum"),
        wq=("wq", "sum")).reset_index()
    n = g["n"].to_numpy(np.float64)
    last, first = g["last"].to_numpy(), g["first"].to_numpy()
    interval = np.where(n >= 2, (first - last) / np.maximum(n - 1, 1), np.nan)
    due = _due(interval, last, horizon)
    decayed = g["decayed"].to_numpy()
    repeat = decayed * (1.0 - due_weight + due_weight * due)
    return {"cust": g["c"].to_numpy(np.int64), "item": g["i"].to_numpy(np.int64),
            "decayed": decayed, "repeat": repeat, "last_age": last, "interval": interval,
            "quantity": g["wq"].to_numpy() / np.maximum(decayed, 1e-300), "n": n}


def _due(interval, last_age, horizon):
    """How due a repurchase is within the next ``horizon`` days, in [0, 1].

    1 when the next purchase (last + mean interval) falls before the horizon ends and is not
    more than one cycle overdue; decays with the distance in cycles otherwise. 0.5 without a
    cycle (bought once).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.maximum(interval, 1.0)
        next_in = m - last_age
        early = np.maximum(next_in - horizon, 0.0) / m
        overdue = np.maximum(-next_in - m, 0.0) / m
        due = np.exp(-early) * np.exp(-0.5 * overdue)
    return np.where(np.isnan(interval), 0.5, due)


def _row_max_scale(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    if m.nnz == 0:
        return m
    row_max = np.maximum.reduceat(m.data, m.indptr[:-1][np.diff(m.indptr) > 0])
    scale = np.zeros(m.shape[0])
    scale[np.diff(m.indptr) > 0] = 1.0 / np.where(row_max > 0, row_max, 1.0)
    m.data = m.data * np.repeat(scale, np.diff(m.indptr))
    return m


def _affinity(decayed: sp.csr_matrix, codes: np.ndarray, n_codes: int) -> np.ndarray:
    onehot = sp.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)),
                           shape=(len(codes), n_codes))
    return _row_max_scale(decayed @ onehot).toarray()


def _top_mask(rows: np.ndarray, values: np.ndarray, n_rows: int, keep: int, bins: int = 256):
    """Mask of entries whose value is in the top ``keep`` of their row, or tied with it at
    histogram resolution (a superset of the exact top ``keep``; linear time). values in [0, 1]."""
    if len(rows) == 0:
        return np.zeros(0, dtype=bool)
    b = np.minimum((np.clip(values, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(rows * bins + b, minlength=n_rows * bins).reshape(n_rows, bins)
    at_least = counts[:, ::-1].cumsum(axis=1)[:, ::-1]  # entries with bin >= j
    enough = at_least >= keep
    # highest bin j with at least `keep` entries at or above it; 0 when the row is short
    cut = np.where(enough.any(axis=1), bins - 1 - np.argmax(enough[:, ::-1], axis=1), 0)
    return b >= cut[rows]


def _prune_rows(m: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep about the ``keep`` largest entries of each row of a row-max-scaled matrix."""
    m = sp.csr_matrix(m)
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    mask = _top_mask(rows, m.data, m.shape[0], keep)
    out = sp.csr_matrix((m.data[mask], (rows[mask], m.indices[mask])), shape=m.shape)
    out.sort_indices()
    return out


def _sorted_member(keys: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    """keys in sorted_ref (sorted, unique)."""
    if len(sorted_ref) == 0:
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_ref, keys), len(sorted_ref) - 1)
    return sorted_ref[at] == keys


def _lookup(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """m[rows, cols] for many entries (0 where absent), via sorted keys."""
    m = sp.csr_matrix(m)
    m.sort_indices()
    mr = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)).astype(np.int64)
    mkey = mr * m.shape[1] + m.indices
    key = rows.astype(np.int64) * m.shape[1] + cols
    if len(mkey) == 0:
        return np.zeros(len(key))
    at = np.minimum(np.searchsorted(mkey, key), len(mkey) - 1)
    return np.where(mkey[at] == key, m.data[at], 0.0)


def _binary(m: sp.csr_matrix) -> sp.csr_matrix:
    b = sp.csr_matrix(m, copy=True)
    b.data = np.ones_like(b.data, dtype=np.float64)
    return b


def _on_pattern(m: sp.csr_matrix, pattern: sp.csr_matrix) -> np.ndarray:
    """Values of ``m`` on the entries of ``pattern`` (a superset of m's entries, value 1)."""
    lifted = (sp.csr_matrix(m, dtype=np.float64) + 4.0 * pattern).tocsr()
    lifted.sort_indices()
    if lifted.nnz != pattern.nnz:
        raise AssertionError("pattern must contain every entry of the matrix")
    return lifted.data - 4.0


def _factor_cosine(decayed, factors, rows, cols):
    user = np.asarray(decayed @ factors)
    user /= np.maximum(np.linalg.norm(user, axis=1, keepdims=True), 1e-12)
    item = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    out = np.empty(len(rows))
    for s in range(0, len(rows), 500_000):
        e = s + 500_000
        out[s:e] = np.einsum("ij,ij->i", user[rows[s:e]], item[cols[s:e]])
    return np.clip(out, 0.0, 1.0)


def _empty_output() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(OUTPUT_COLUMNS, [
        "int64", "int64", "int64", "float64", "object", "object", "object", "float64",
        "datetime64[ns]", "float64", "object"])})

"""cf_training and faiss_rebuild under `airflow dags test` on real PostgreSQL and Redis, planted data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from include.datasets.source_tables import load_source
from tests.integration._planted import END, planted, user_group, item_group

AS_OF = END
GOOD = {"as_of_date": AS_OF, "factors": 16, "regularization": 5.0, "alpha": 2.0, "iterations": 15,
        "holdout_days": 12, "history_days": 200}
WORSE = {**GOOD, "factors": 1, "iterations": 1, "tolerance": 0.0}


@pytest.fixture(scope="module")
def planted_source(database):
    orders, products = planted()
    load_source(database, orders, products)
    return orders, products


def _out(result) -> str:
    return result.stdout[-4000:] + result.stderr[-4000:]


def _similarities(database) -> list[tuple]:
    with database.conn.cursor() as cur:
        cur.execute("SELECT user_id, rank, similar_user_id, score, model_version FROM user_similarities "
                    "ORDER BY user_id, rank")
        rows = cur.fetchall()
    database.conn.commit()
    return rows


def test_cf_training_promotes_refuses_worse_rolls_back_and_refuses_damage(dag_runner, database, redis_client,
                                                                           planted_source):
    from include.runtime.model_loaders import CF_MODEL, load_als
    from include.runtime.model_store import ModelStore

    store = ModelStore(CF_MODEL)
    first = dag_runner("cf_training", GOOD)
    assert first.returncode == 0, _out(first)
    meta = json.loads(redis_client.get("cf:metadata:last_run"))
    assert meta["promoted"] is True and meta["current_version"] == meta["trained_version"] == store.current()
    v1 = meta["current_version"]
    assert meta["metrics"]["ndcg@10"] > 0.2 and meta["metrics"]["users"] == 240
    files = store.metadata(v1)["files"]
    assert set(files) == {"user_factors.npy", "item_factors.npy", "user_ids.npy", "item_ids.npy"}
    assert all(len(f["sha256"]) == 64 for f in files.values())
    good = load_als()
    assert good.version == v1 and good.user_factors.shape == (240, 16)

    # MySanta similarities: the planted neighbours, 20 per user, from the promoted version
    rows = _similarities(database)
    assert len(rows) == 240 * 20 and {r[4] for r in rows} == {v1}
    users, similar = np.array([r[0] for r in rows]), np.array([r[2] for r in rows])
    assert (user_group(users) == user_group(similar)).mean() > 0.95
    assert not (users == similar).any()

    # a deliberately worse candidate is saved but not promoted, and the run says why
    worse = dag_runner("cf_training", WORSE)
    assert worse.returncode == 0, _out(worse)
    meta = json.loads(redis_client.get("cf:metadata:last_run"))
    assert meta["promoted"] is False and meta["current_version"] == v1 and store.current() == v1
    assert "worse than the promoted model" in meta["reason"]
    assert meta["metrics"]["ndcg@10"] < meta["baseline_metrics"]["ndcg@10"]
    v2 = meta["trained_version"]
    assert store.metadata(v2)["decision"]["promote"] is False

    # force it live, then roll back: the exact earlier factors come back (checksums and arrays)
    forced = dag_runner("cf_training", {**WORSE, "force_promote": True})
    assert forced.returncode == 0, _out(forced)
    v3 = store.current()
    assert v3 not in (v1, v2)
    assert {r[4] for r in _similarities(database)} == {v3}
    back = dag_runner("cf_training", {"rollback_to": v1})
    assert back.returncode == 0, _out(back)
    assert store.current() == v1 and store.pointer()["previous"] == v3
    restored = load_als()
    assert store.verify(v1)["files"] == files
    np.testing.assert_array_equal(restored.user_factors, good.user_factors)
    np.testing.assert_array_equal(restored.item_factors, good.item_factors)
    assert {r[4] for r in _similarities(database)} == {v1}

    # a truncated artifact is refused with a clear error; the live model stays
    path = store.path(v3) / "item_factors.npy"
    path.write_bytes(path.read_bytes()[:100])
    refused = dag_runner("cf_training", {"rollback_to": v3})
    assert refused.returncode != 0
    assert "truncated" in _out(refused) and f"live model stays {v1}" in _out(refused)
    assert store.current() == v1


def test_faiss_rebuild_builds_caches_validates_and_rolls_back(dag_runner, database, redis_client, planted_source,
                                                           monkeypatch):
    from include.runtime.model_loaders import FAISS_MODEL, load_product_index, similar_products
    from include.runtime.model_store import ModelStore

    # the TF-IDF + SVD fallback, also where `make embeddings` installed the packaged model (its own test)
    monkeypatch.setenv("FAISS_EMBEDDING_PACKAGE", "no_such_model_package")

    store = ModelStore(FAISS_MODEL)
    first = dag_runner("faiss_rebuild", {})
    assert first.returncode == 0, _out(first)
    meta = json.loads(redis_client.get("faiss:metadata:last_run"))
    v1 = meta["current_version"]
    assert store.current() == v1 and meta["index_type"] == "flat" and meta["recall@10"] >= 0.95
    assert meta["embedder"] == "tfidf_svd" and meta["embedded"] == 150 and meta["cached"] == 0
    assert meta["latency_ms_p50"] is not None

    index = load_product_index()
    assert index.version == v1 and len(index.product_ids) == 150
    neighbours = similar_products(1, k=10)
    assert len(neighbours) == 10 and 1 not in [p for p, _ in neighbours]
    assert (item_group([p for p, _ in neighbours]) == item_group(1)).all()

    # second run: every embedding comes from the cache
    again = dag_runner("faiss_rebuild", {"index_type": "ivf"})
    assert again.returncode == 0, _out(again)
    meta = json.loads(redis_client.get("faiss:metadata:last_run"))
    assert meta["cached"] == 150 and meta["embedded"] == 0 and meta["index_type"] == "ivf"
    v2 = meta["current_version"]
    assert v2 != v1 and meta["previous_version"] == v1 and v1 in store.version_ids()  # kept 24 hours

    # a broken index (IVF probing one list, nothing tuned) fails validation; the live index stays
    broken = dag_runner("faiss_rebuild", {"index_type": "ivf", "nprobe": 1})
    assert broken.returncode != 0
    assert "index validation failed" in _out(broken) and store.current() == v2

    back = dag_runner("faiss_rebuild", {"rollback_to": v1})
    assert back.returncode == 0, _out(back)
    assert store.current() == v1 and similar_products(1, k=10) == neighbours


def test_weekly_recs_uses_promoted_factors_and_survives_a_damaged_model(planted_source, caplog):
    """Runs after the cf_training test in this module: a model is promoted."""
    from include.jobs.weekly_recs import _promoted_item_factors
    from include.runtime.model_loaders import CF_MODEL
    from include.runtime.model_store import ModelStore

    store = ModelStore(CF_MODEL)
    factors, ids, version = _promoted_item_factors()
    assert version == store.current() and factors.shape == (len(ids), 16)
    path = store.path(version) / "item_ids.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-8] + b"\0" * 8)
    try:
        assert _promoted_item_factors() == (None, None, None)
        assert "unusable" in caplog.text and "checksum" in caplog.text
    finally:
        path.write_bytes(data)

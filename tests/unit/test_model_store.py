"""Versioned artifacts: checksums, atomic promotion, rollback, refusal of damaged files, retention."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from include.runtime.model_store import ArtifactError, ModelStore

T0 = dt.datetime(2024, 12, 1, 2, 0, tzinfo=dt.timezone.utc)


def _arrays(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"user_factors": rng.normal(size=(50, 8)).astype(np.float32), "user_ids": np.arange(50, dtype=np.int64)}


def test_save_promote_load_and_rollback_restore_exact_arrays(tmp_path):
    store = ModelStore("cf_als", root=tmp_path)
    assert store.current() is None
    with pytest.raises(LookupError, match="no promoted"):
        store.load()
    v1 = store.save(_arrays(1), {"metrics": {"ndcg@10": 0.3}}, now=T0)
    store.promote(v1, "first", now=T0)
    v2 = store.save(_arrays(2), {"metrics": {"ndcg@10": 0.4}}, now=T0 + dt.timedelta(days=1))
    pointer = store.promote(v2, "better", now=T0 + dt.timedelta(days=1))
    assert pointer["previous"] == v1 and store.current() == v2
    checksums_v1 = store.metadata(v1)["files"]

    store.promote(v1, "rollback", now=T0 + dt.timedelta(days=2))
    arrays, meta = store.load()
    assert meta["version"] == v1 and meta["files"] == checksums_v1
    np.testing.assert_array_equal(arrays["user_factors"], _arrays(1)["user_factors"])
    history = store.pointer()["history"]
    assert [h["version"] for h in history] == [v1, v2, v1]
    assert history[1]["superseded_at"] == (T0 + dt.timedelta(days=2)).isoformat(timespec="seconds")
    assert not list((tmp_path / "models" / "cf_als").glob(".*.tmp"))  # the pointer's temp file was replaced


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_artifact_is_refused_and_the_current_model_stays(tmp_path, damage):
    store = ModelStore("cf_als", root=tmp_path)
    good = store.save(_arrays(1), {}, now=T0)
    store.promote(good, "first", now=T0)
    bad = store.save(_arrays(2), {}, now=T0 + dt.timedelta(hours=1))
    path = store.path(bad) / "user_factors.npy"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        path.unlink()
    expected = {"truncate": "truncated", "flip": "checksum", "delete": "missing"}[damage]
    with pytest.raises(ArtifactError, match=expected):
        store.promote(bad, "should fail")
    with pytest.raises(ArtifactError, match=expected):
        store.load(bad)
    assert store.current() == good
    np.testing.assert_array_equal(store.load()[0]["user_factors"], _arrays(1)["user_factors"])


def test_corrupt_metadata_and_unknown_versions_are_clear_errors(tmp_path):
    store = ModelStore("cf_als", root=tmp_path)
    v = store.save(_arrays(1), {}, now=T0)
    (store.path(v) / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        store.load(v)
    with pytest.raises(ArtifactError, match="not a version id"):
        store.load("../../etc")
    with pytest.raises(ArtifactError, match="missing"):
        store.load("20200101T000000-00000000")


def test_object_arrays_are_not_stored(tmp_path):
    with pytest.raises(ValueError, match="dtype object"):
        ModelStore("x", root=tmp_path).save({"a": np.array([{"x": 1}], dtype=object)}, {})


def test_retention_keeps_last_n_young_promoted_and_recently_superseded(tmp_path):
    store = ModelStore("cf_als", root=tmp_path)
    versions = [store.save(_arrays(i), {}, now=T0 + dt.timedelta(days=i)) for i in range(10)]
    store.promote(versions[1], "old but live", now=T0 + dt.timedelta(days=1))
    now = T0 + dt.timedelta(days=12)
    removed = store.retain(keep_last=3, min_age=dt.timedelta(days=7), now=now)
    kept = store.version_ids()
    # last 3 (7, 8, 9), younger than 7 days (days 6..9), the live one (1)
    assert kept == [versions[i] for i in (1, 6, 7, 8, 9)]
    assert sorted(removed) == [versions[i] for i in (0, 2, 3, 4, 5)]


def test_previous_version_kept_for_the_window_after_it_was_superseded(tmp_path):
    store = ModelStore("faiss", root=tmp_path)
    old = store.save(_arrays(1), {}, now=T0)
    store.promote(old, "weekly", now=T0)
    new = store.save(_arrays(2), {}, now=T0 + dt.timedelta(days=7))
    store.promote(new, "weekly", now=T0 + dt.timedelta(days=7))
    assert store.retain(1, dt.timedelta(hours=24), now=T0 + dt.timedelta(days=7, hours=23)) == []
    assert store.retain(1, dt.timedelta(hours=24), now=T0 + dt.timedelta(days=8, hours=1)) == [old]
    assert store.version_ids() == [new]
    assert json.loads((tmp_path / "models" / "faiss" / "CURRENT.json").read_text())["version"] == new

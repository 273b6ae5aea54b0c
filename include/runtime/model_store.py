"""Versioned model artifacts under ARTIFACT_ROOT/models/<name>/ with an atomically flipped pointer.

    models/<name>/versions/<version>/<array>.npy   arrays only (np.save, allow_pickle=False)
    models/<name>/versions/<version>/metadata.json params, data window, metrics, per-file sha256
    models/<name>/CURRENT.json                     {"version", "promoted_at", "previous", "history"}

A version directory is written under a temporary name and renamed into place, so a reader sees
a whole version or none. The pointer is replaced with os.replace (atomic on POSIX), so a reader
sees the old or the new pointer, never half of one. Every load and every promotion verifies
the checksums first: a truncated or altered file raises ArtifactError and nothing changes.
Binary indexes (FAISS) are stored as uint8 .npy arrays of their serialised bytes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from include.runtime import artifacts

log = logging.getLogger(__name__)

POINTER = "CURRENT.json"
METADATA = "metadata.json"
_HISTORY = 50
_VERSION = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{8}$")


class ArtifactError(ValueError):
    """A model artifact is missing, truncated or altered; the message says which file and what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _utc(value: dt.datetime | None) -> dt.datetime:
    value = value or dt.datetime.now(dt.timezone.utc)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, fsync it, then os.replace it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ModelStore:
    """The versions of one model (e.g. "cf_als", "faiss_products") and its promoted pointer."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"model name {name!r}: use letters, digits, _ . -")
        self.name = name
        self.base = Path(root if root is not None else artifacts.root()) / "models" / name
        self.versions_dir = self.base / "versions"

    # ------------------------------------------------------------------ writing
    def save(self, arrays: dict[str, Any], metadata: dict[str, Any], now: dt.datetime | None = None) -> str:
        """Write a new version (arrays as .npy, metadata.json with checksums); its version id."""
        import numpy as np

        now = _utc(now)
        version = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.versions_dir / f".tmp-{version}"
        tmp.mkdir()
        try:
            files = {}
            for key, array in arrays.items():
                if not re.fullmatch(r"[A-Za-z0-9_]+", key):
                    raise ValueError(f"array name {key!r}: use letters, digits and _")
                array = np.asarray(array)
                if array.dtype == object:
                    raise ValueError(f"array {key!r} has dtype object; store numbers or fixed-width strings")
                path = tmp / f"{key}.npy"
                with open(path, "wb") as f:
                    np.save(f, array, allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
                files[path.name] = {"sha256": _sha256(path), "bytes": path.stat().st_size,
                                    "shape": list(array.shape), "dtype": array.dtype.str}
            meta = {**metadata, "model": self.name, "version": version,
                    "created_at": now.isoformat(timespec="seconds"), "files": files}
            with open(tmp / METADATA, "w") as f:
                json.dump(meta, f, indent=2, sort_keys=True, default=str)
            os.rename(tmp, self.versions_dir / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("%s: saved version %s (%s)", self.name, version,
                 ", ".join(f"{k} {v['shape']}" for k, v in files.items()))
        return version

    def promote(self, version: str, reason: str, now: dt.datetime | None = None) -> dict[str, Any]:
        """Verify `version`, then point CURRENT.json at it (atomically); the new pointer."""
        self.verify(version)
        now = _utc(now)
        old = self.pointer()
        history = list(old.get("history", [])) if old else []
        if old and old.get("version") and history:
            history[-1] = {**history[-1], "superseded_at": now.isoformat(timespec="seconds")}
        history.append({"version": version, "promoted_at": now.isoformat(timespec="seconds"), "reason": reason})
        pointer = {"model": self.name, "version": version, "promoted_at": now.isoformat(timespec="seconds"),
                   "previous": old.get("version") if old else None, "reason": reason,
                   "history": history[-_HISTORY:]}
        write_json_atomic(self.base / POINTER, pointer)
        log.info("%s: promoted %s (previous %s): %s", self.name, version, pointer["previous"], reason)
        return pointer

    # ------------------------------------------------------------------ reading
    def pointer(self) -> dict[str, Any] | None:
        path = self.base / POINTER
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise ArtifactError(f"{path} is not valid JSON ({exc}); restore it with rollback_to=<version>") from None

    def current(self) -> str | None:
        """The promoted version, None when nothing was promoted yet."""
        pointer = self.pointer()
        return pointer["version"] if pointer else None

    def path(self, version: str) -> Path:
        if not _VERSION.match(version or ""):
            raise ArtifactError(f"{self.name}: {version!r} is not a version id (like 20241229T020000-1a2b3c4d); "
                                f"known: {self.version_ids()[-5:]}")
        return self.versions_dir / version

    def metadata(self, version: str) -> dict[str, Any]:
        path = self.path(version) / METADATA
        if not path.exists():
            raise ArtifactError(f"{self.name} version {version}: {path} is missing; known versions: "
                                f"{self.version_ids()[-5:]}")
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise ArtifactError(f"{self.name} version {version}: {path} is corrupt ({exc})") from None

    def verify(self, version: str) -> dict[str, Any]:
        """The version's metadata once every file exists with its recorded size and sha256."""
        meta = self.metadata(version)
        directory = self.path(version)
        for name, spec in meta.get("files", {}).items():
            path = directory / name
            if not path.exists():
                raise ArtifactError(f"{self.name} version {version}: {name} is missing; this version cannot be "
                                    "loaded (roll back to another one)")
            size = path.stat().st_size
            if size != spec["bytes"]:
                raise ArtifactError(f"{self.name} version {version}: {name} has {size} bytes, expected "
                                    f"{spec['bytes']} (truncated or overwritten); refusing to load it")
            if _sha256(path) != spec["sha256"]:
                raise ArtifactError(f"{self.name} version {version}: {name} fails its sha256 checksum (corrupt); "
                                    "refusing to load it")
        return meta

    def load(self, version: str | None = None, mmap: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """(arrays, metadata) of `version` (default: the promoted one), checksums verified first.
        Raises LookupError when nothing is promoted, ArtifactError when the version is damaged."""
        import numpy as np

        version = version or self.current()
        if version is None:
            raise LookupError(f"no promoted {self.name} model yet under {self.base}")
        meta = self.verify(version)
        arrays = {}
        for name, spec in meta["files"].items():
            try:
                array = np.load(self.path(version) / name, mmap_mode="r" if mmap else None, allow_pickle=False)
            except ValueError as exc:
                raise ArtifactError(f"{self.name} version {version}: {name} is not a plain .npy array ({exc})") from None
            if list(array.shape) != spec["shape"] or array.dtype.str != spec["dtype"]:
                raise ArtifactError(f"{self.name} version {version}: {name} is {array.shape} {array.dtype}, metadata "
                                    f"says {spec['shape']} {spec['dtype']}")
            arrays[name[:-4]] = array
        return arrays, meta

    def version_ids(self) -> list[str]:
        if not self.versions_dir.exists():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and _VERSION.match(p.name))

    # ------------------------------------------------------------------ retention
    def retain(self, keep_last: int, min_age: dt.timedelta, now: dt.datetime | None = None,
               dry_run: bool = False) -> list[str]:
        """Delete versions that are not promoted, not among the last `keep_last`, and neither created nor
        superseded within `min_age`; the versions deleted (with `dry_run`: that would be, none is)."""
        now = _utc(now)
        versions = self.version_ids()
        pointer = self.pointer() or {}
        keep = set(versions[-keep_last:]) if keep_last > 0 else set()
        keep.add(pointer.get("version"))
        cutoff = now - min_age
        for entry in pointer.get("history", []):
            superseded = entry.get("superseded_at")
            if superseded and dt.datetime.fromisoformat(superseded) > cutoff:
                keep.add(entry["version"])
        removed = []
        for version in versions:
            created = dt.datetime.strptime(version[:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)
            if version in keep or created > cutoff:
                continue
            if not dry_run:
                shutil.rmtree(self.versions_dir / version)
            removed.append(version)
        for stale in self.versions_dir.glob(".tmp-*") if self.versions_dir.exists() and not dry_run else []:
            created = dt.datetime.fromtimestamp(stale.stat().st_mtime, dt.timezone.utc)
            if created < now - dt.timedelta(days=1):
                shutil.rmtree(stale, ignore_errors=True)
        if removed:
            log.info("%s: retention %s %d versions: %s", self.name, "would remove" if dry_run else "removed",
                     len(removed), removed)
        return removed

"""Run-scoped artifact directories under ARTIFACT_ROOT.

Models save themselves with numpy/parquet into a local directory, so the root must be a
file:// URI (a shared volume when workers run on several machines). Object stores (s3://...)
are not supported yet: a clear error says so instead of writing somewhere unexpected.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from include.runtime import config


def root() -> Path:
    uri = config.get("ARTIFACT_ROOT")
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        raise ValueError(f"ARTIFACT_ROOT={uri!r}: only file:// roots (a local or shared volume) are supported")
    return Path(unquote(parts.path))


def run_directory(job: str, key: str) -> Path:
    """A directory for this job and run key (a run id, a week), created if missing."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    directory = root() / job / safe
    directory.mkdir(parents=True, exist_ok=True)
    return directory

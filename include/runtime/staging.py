"""A run's staged results: what a shard computed, kept until `validate` passes and `publish` writes it.

One parquet file per shard in the run's artifact directory (ARTIFACT_ROOT/<job>/<run key>/staged),
written under a temporary name and renamed, so a retried shard replaces its file whole and a
publish never reads half of one. Nothing a reader uses changes when a shard stages.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from include.runtime import artifacts

if TYPE_CHECKING:
    import pandas as pd

DOCUMENT_COLUMNS = ("key", "value")  # a staged document: the Redis key and its JSON value


def _directory(job: str, run_key: str) -> Path:
    return artifacts.run_directory(job, run_key) / "staged"


def path(job: str, run_key: str, shard: int, of: int) -> Path:
    return _directory(job, run_key) / f"shard-{shard:04d}-of-{of:04d}.parquet"


def save(job: str, run_key: str, shard: int, of: int, frame: "pd.DataFrame") -> Path:
    """Stage `frame` as the shard's results (replacing what an earlier try staged)."""
    target = path(job, run_key, shard, of)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    frame.reset_index(drop=True).to_parquet(partial, index=False)
    os.replace(partial, target)
    return target


@contextlib.contextmanager
def writing(job: str, run_key: str, shard: int, of: int,
            empty: "pd.DataFrame") -> Iterator[Callable[["pd.DataFrame"], int]]:
    """Stage a shard's results part by part, so a long shard never holds them all: yields a
    function taking each part (the same columns and dtypes as `empty`); the file takes its place
    only when the block ends without error, `empty` when no part came."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = path(job, run_key, shard, of)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    schema = pa.Schema.from_pandas(empty, preserve_index=False)
    with pq.ParquetWriter(partial, schema) as parquet:
        def write(frame: "pd.DataFrame") -> int:
            parquet.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            return len(frame)

        try:
            yield write
        except BaseException:
            parquet.close()
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, target)


def load(job: str, run_key: str, shard: int, of: int) -> "pd.DataFrame":
    """The shard's staged results; a clear error when the shard never staged them."""
    import pandas as pd

    source = path(job, run_key, shard, of)
    if not source.exists():
        raise FileNotFoundError(
            f"{job} shard {shard + 1}/{of} of run {run_key!r} has no staged results at {source}: its process "
            "task did not finish, or ran on a machine whose ARTIFACT_ROOT is not shared with this one. "
            "Clear the shard's process task, then publish again.")
    return pd.read_parquet(source)


def discard(job: str, run_key: str) -> None:
    """Remove the run's staged results (after publication, or when the run is abandoned)."""
    shutil.rmtree(_directory(job, run_key), ignore_errors=True)


def documents(pairs: list[tuple[str, str]]) -> "pd.DataFrame":
    """(key, JSON value) pairs as a frame of DOCUMENT_COLUMNS, ready to stage."""
    import pandas as pd

    return pd.DataFrame(pairs, columns=list(DOCUMENT_COLUMNS)).astype({"key": str, "value": str})

"""The dead-letter table: entities that failed permanently, with what is needed to re-drive them."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from include.runtime.bulk_writer import BulkWriter
from include.runtime.database import Database

if TYPE_CHECKING:
    import pandas as pd


def record(db: Database, job_name: str, job_id: str, failures: "pd.DataFrame") -> int:
    """Replace job `job_id`'s dead letters of `job_name` with `failures` (columns error, input and
    optionally stack_trace); a retried shard therefore never duplicates its letters. Scheduled
    runs of different DAGs share run ids, hence the job name in the key."""
    import pandas as pd

    rows = pd.DataFrame({
        "job_id": job_id,
        "job_name": job_name,
        "error": failures["error"].astype(str).to_numpy(),
        "stack_trace": failures["stack_trace"].to_numpy() if "stack_trace" in failures else None,
        "input": [json.dumps(v, default=str) for v in failures["input"]],
    })
    return BulkWriter(db).load("dead_letter", rows, delete="delete_dead_letters", params={"job_id": job_id, "job_name": job_name})

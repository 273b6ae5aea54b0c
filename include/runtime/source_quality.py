"""Bad order lines in the source database: counted per reason, quarantined, kept out of the jobs.

The rules, one reason per line (the first that applies):
- `null_id`: no customer, product or order (a NULL id or an orphaned row: the source has no
  foreign keys);
- `future_date`: ordered after the later of the run's window end and now;
- `non_positive_quantity`: quantity <= 0;
- `absurd_quantity`: quantity above SOURCE_MAX_QUANTITY;
- `duplicate_line`: the same product again in the same order (the line with the lowest id is kept).
The jobs' queries leave these lines out (the quantity and duplicate predicates, `max_quantity`
from `rule_params`; ids and dates by their joins and windows); `quarantine` runs
source_bad_rows once per run to count them and write a bounded sample to dead_letter.
Unicode or long names are not faults: they are data.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from include.runtime import config, dead_letters
from include.runtime.config import RESULTS_CONN_ID, SOURCE_CONN_ID
from include.runtime.database import Database

log = logging.getLogger(__name__)

REASONS = ("null_id", "future_date", "non_positive_quantity", "absurd_quantity", "duplicate_line")
_PREFIX = "bad_rows_"
JOB_ID_SUFFIX = ":source_rows"  # own dead-letter job id: the shard's entity failures are replaced apart


def rule_params() -> dict[str, Any]:
    """The bound parameters the jobs' order-line queries need to leave bad lines out."""
    return {"max_quantity": config.get_float("SOURCE_MAX_QUANTITY")}


def quarantine(job: str, job_id: str, shard: int, start: dt.datetime, until: dt.datetime,
               dry_run: bool = False) -> dict[str, int]:
    """Count the run's bad lines in [start, until) (plus future-dated and orphaned ones) and
    replace `job_id`'s dead letters with at most SOURCE_QUARANTINE_MAX_ROWS of them per reason.

    Once per run: the first shard (`shard` 0) covers the whole window, the others report zeros;
    one scan of the order lines per run, not one per shard. Returns stats fields
    `bad_rows_<reason>` and `bad_rows` (the total), for the shard's stats.
    """
    import pandas as pd

    if shard != 0:
        return {**{f"{_PREFIX}{reason}": 0 for reason in REASONS}, "bad_rows": 0}
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    params = {**rule_params(), "start": start, "until": until, "future_after": max(until, now),
              "max_rows": config.get_int("SOURCE_QUARANTINE_MAX_ROWS")}
    with Database(SOURCE_CONN_ID) as db:
        bad = db.frame("source_bad_rows", params)
    per_reason = bad.groupby("reason")["reason_rows"].first() if len(bad) else pd.Series(dtype="int64")
    counts = {f"{_PREFIX}{reason}": int(per_reason.get(reason, 0)) for reason in REASONS}
    counts["bad_rows"] = sum(counts.values())
    if not dry_run:
        rows = bad.drop(columns=["reason", "reason_rows"]).astype(object)
        letters = pd.DataFrame({"error": "bad source row: " + bad["reason"],
                                "input": rows.where(rows.notna(), None).to_dict("records")})
        with Database(RESULTS_CONN_ID) as results:
            dead_letters.record(results, job, job_id + JOB_ID_SUFFIX, letters)
    if counts["bad_rows"]:
        log.warning("%s: %d bad source rows left out (%s), %d quarantined in dead_letter",
                    job, counts["bad_rows"],
                    ", ".join(f"{r} {counts[_PREFIX + r]}" for r in REASONS if counts[_PREFIX + r]),
                    0 if dry_run else len(bad))
    return counts


def run_counts(summary: dict[str, Any]) -> dict[str, int]:
    """{reason: count} of a run from its summed shard stats, for the run metadata."""
    return {reason: int(summary.get(_PREFIX + reason, 0)) for reason in REASONS}

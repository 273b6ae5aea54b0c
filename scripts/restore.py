"""Rewrite a week's recommendation keys from the backup table: `python -m scripts.restore weekly_recs --week 2025-W46`.

Seed 000 keeps WeeklyRecommendation as the fallback when Redis loses data (a flush, a failover to
an empty replica, eviction). This rewrites every `{week}:{customer_id}` key of the week from the
table with the value and the expiry its publish gave it (the same code as publish: the same
document builder and pipelined SETs), so the API serves exactly what it served before; keys whose
expiry has passed stay gone; `recs:current_week` is left as it is.
Needs the `recs_db` and `redis_default` connections (AIRFLOW_CONN_RECS_DB, AIRFLOW_CONN_REDIS_DEFAULT).
The maintenance DAG does the same with its `restore_week` param.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

JOBS = ("weekly_recs",)  # the only job whose whole output the SQL tables hold


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Rewrite a week's {week}:{customer_id} keys from WeeklyRecommendation.")
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("--week", required=True, help="ISO week, e.g. 2025-W46")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d{4}-W\d{2}", args.week):
        parser.error(f"--week must be an ISO week like 2025-W46, got {args.week!r}")

    from include.jobs.weekly_recs import restore_week

    result = restore_week(args.week)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["keys_written"] else 1)

"""List the dead letters: entities that failed permanently, newest first.

    python -m scripts.dead_letters [--job forecast_worker] [--limit 50] [--json]
"""
from __future__ import annotations

import argparse
import json

from include.runtime.config import RESULTS_CONN_ID
from include.runtime.database import Database


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="List dead letters, newest first.")
    parser.add_argument("--job", help="only this job (e.g. forecast_worker)")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    with Database(RESULTS_CONN_ID) as db:
        letters = db.frame("dead_letters_list", {"job_name": args.job, "limit": args.limit}).to_dict("records")
    for letter in letters:
        if args.json:
            print(json.dumps(letter, default=str))
        else:
            print(f"{letter['created_at']}  {letter['job_name']}  {letter['job_id']}\n"
                  f"    error: {letter['error']}\n    input: {letter['input']}")
    if not args.json:
        print(f"{len(letters)} dead letters" + (f" of {args.job}" if args.job else ""))
    return letters


if __name__ == "__main__":
    main()

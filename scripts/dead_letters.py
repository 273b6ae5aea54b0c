"""Dead letters: entities that failed permanently. List them (newest first), or re-drive them.

    python -m scripts.dead_letters [list] [--job forecast_worker] [--limit 50] [--json]
    python -m scripts.dead_letters redrive [--job J] [--since 2024-05-01] [--id 7 --id 9] [--dry-run | --now]

`redrive` takes the letters not re-driven yet (narrowed by --job, --since, --id), groups them by
job and as_of (from the letter's input JSON: product_id for forecast_worker, customer_id for
order_insights) and sends each group through the `backfill` DAG with the conf
{"job", "start_date": as_of, "end_date": as_of, "product_ids" | "user_ids": [...], "dry_run": false}:
by default triggered (`airflow dags trigger`, run id `redrive__<job>__<as_of>__<time>__<n>`; the
scheduler runs it, and it runs the job's own DAG for those ids). With --now (or --wait) the job's
DAG itself runs in this process with `airflow dags test` and the conf the backfill would give it
({"as_of_date", "product_ids" | "user_ids"}, weekly_recs also its "week"), and its outcome is
awaited. A group's letters are marked (redriven_at, redrive_run_id) once its run was
triggered or, with --now, succeeded, so no letter is re-driven twice; a failed run marks nothing.
(With --now the mark holds the `dags test` run's own id, manual__<time>, read from its log, or the
redrive label when the log does not show it.)
--dry-run prints the confs and changes nothing. Letters whose input lacks an id or as_of cannot be
re-driven: they are reported and left alone. Needs what the health command needs: the `recs_db`
connection and, to trigger, Airflow's metadata database (e.g. in the scheduler container).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from typing import Any

from include.jobs.backfill import MAX_IDS
from include.runtime.config import RESULTS_CONN_ID
from include.runtime.database import Database

BACKFILL_DAG = "backfill"
# The id a job's letter input carries -> the backfill conf field that selects those entities.
ID_FIELDS = {"product_id": "product_ids", "customer_id": "user_ids"}
_TEST_RUN_ID = re.compile(r"creating dag run.*?\brun_id=(\S+)")  # `airflow dags test`'s log line


def group_letters(letters: list[dict[str, Any]], max_ids: int = MAX_IDS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(groups, skipped): per (job, as_of) one group, or several of at most `max_ids` entities (the
    backfill conf's limit), each with its backfill conf and letter ids, in job and date order;
    skipped: letters whose input names no entity id or no valid as_of."""
    grouped: dict[tuple[str, str, str], dict[int, list[int]]] = {}  # entity id -> its letters
    skipped = []
    for letter in letters:
        try:
            payload = json.loads(letter["input"] or "null")
        except ValueError:
            payload = None
        payload = payload if isinstance(payload, dict) else {}
        field = next((f for f in ID_FIELDS if payload.get(f) is not None), None)
        try:
            as_of = dt.date.fromisoformat(str(payload.get("as_of"))).isoformat()
        except ValueError:
            as_of = None
        if field is None or as_of is None:
            skipped.append(letter)
            continue
        entities = grouped.setdefault((letter["job_name"], as_of, ID_FIELDS[field]), {})
        entities.setdefault(int(payload[field]), []).append(int(letter["id"]))
    groups = []
    for (job, as_of, field), entities in sorted(grouped.items()):
        ids = sorted(entities)
        for start in range(0, len(ids), max_ids):
            part = ids[start:start + max_ids]
            groups.append({"conf": {"job": job, "start_date": as_of, "end_date": as_of, field: part, "dry_run": False},
                           "letter_ids": sorted(i for e in part for i in entities[e])})
    return groups, skipped


def pending_letters(db: Database, job: str | None, since: dt.datetime | None,
                    ids: list[int] | None) -> list[dict[str, Any]]:
    """Letters not re-driven yet, of `job` and created since `since` when given, only `ids` when given."""
    letters = db.frame("dead_letters_pending", {"job_name": job, "since": since}).to_dict("records")
    wanted = set(ids or ())
    return [letter for letter in letters if not wanted or int(letter["id"]) in wanted]


def mark_redriven(db: Database, letter_ids: list[int], run_id: str, at: dt.datetime) -> None:
    """Mark the letters as re-driven by backfill run `run_id`, in one transaction."""
    with db.conn.cursor() as cur:
        cur.executemany(db.sql("mark_dead_letter_redriven"),
                        [{"id": i, "redriven_at": at, "run_id": run_id} for i in letter_ids])
    db.conn.commit()


def _run_backfill(conf: dict[str, Any], run_id: str, now: bool) -> subprocess.CompletedProcess:
    """Trigger the backfill DAG with `conf` (run id `run_id`), or with `now` run the job's own DAG here
    with `dags test` and the conf the backfill would trigger it with."""
    if now:
        from include.jobs import backfill

        run = backfill.BackfillRun(job=conf["job"], start=dt.date.fromisoformat(conf["start_date"]),
                                   end=dt.date.fromisoformat(conf["end_date"]), product_ids=conf.get("product_ids"),
                                   user_ids=conf.get("user_ids"), features=None, dry_run=False, run_key=run_id)
        (item,) = backfill.dates(run)
        command = ["dags", "test", run.job, "--conf", json.dumps(backfill.job_conf(run, item))]
    else:
        command = ["dags", "trigger", BACKFILL_DAG, "--run-id", run_id, "--conf", json.dumps(conf)]
    return subprocess.run([sys.executable, "-m", "airflow", *command], capture_output=True, text=True)


def redrive(args: argparse.Namespace) -> list[dict[str, Any]]:
    with Database(RESULTS_CONN_ID) as db:
        letters = pending_letters(db, args.job, args.since, args.id)
        groups, skipped = group_letters(letters)
        for letter in skipped:
            print(f"cannot re-drive letter {letter['id']} ({letter['job_name']}): its input names no product_id / "
                  f"customer_id with an as_of: {letter['input']}", file=sys.stderr)
        started = dt.datetime.now(dt.timezone.utc)
        for n, group in enumerate(groups):
            conf = group["conf"]
            group["run_id"] = f"redrive__{conf['job']}__{conf['start_date']}__{started:%Y%m%dT%H%M%S}__{n}"
            if args.dry_run:
                group["status"] = "dry_run"
                print(json.dumps(group) if args.json else json.dumps(conf))
                continue
            print(f"re-driving {len(group['letter_ids'])} letters of {conf['job']} as of {conf['start_date']} "
                  f"({'dags test' if args.now else 'trigger'} {BACKFILL_DAG}, run {group['run_id']})", file=sys.stderr)
            out = _run_backfill(conf, group["run_id"], args.now)
            if out.returncode:
                group["status"] = "failed"
                print(f"  backfill {'run' if args.now else 'trigger'} failed (exit {out.returncode}); letters "
                      f"stay pending:\n{(out.stdout + out.stderr)[-3000:]}", file=sys.stderr)
            else:
                found = _TEST_RUN_ID.search(out.stdout + out.stderr) if args.now else None
                group["run_id"] = found[1] if found else group["run_id"]
                mark_redriven(db, group["letter_ids"], group["run_id"],
                              dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
                group["status"] = "succeeded" if args.now else "triggered"
            print(json.dumps(group) if args.json else f"  {group['status']}: {json.dumps(conf)}")
    redriven = sum(len(g["letter_ids"]) for g in groups if g["status"] in ("succeeded", "triggered"))
    print(f"{len(letters)} pending letters in {len(groups)} groups, {len(skipped)} cannot be re-driven; "
          + ("dry run: nothing triggered or marked" if args.dry_run else
             f"{redriven} re-driven, {sum(g['status'] == 'failed' for g in groups)} groups failed"), file=sys.stderr)
    return groups


def list_letters(args: argparse.Namespace) -> list[dict[str, Any]]:
    import pandas as pd

    with Database(RESULTS_CONN_ID) as db:
        letters = db.frame("dead_letters_list", {"job_name": args.job, "limit": args.limit}).to_dict("records")
    for letter in letters:
        for column in ("redriven_at", "redrive_run_id"):  # NaT / NaN of a never re-driven letter: null
            letter[column] = None if pd.isna(letter[column]) else letter[column]
        letter["status"] = "pending" if letter["redriven_at"] is None else "redriven"
        if args.json:
            print(json.dumps(letter, default=str))
        else:
            status = (f"re-driven {letter['redriven_at']} by {letter['redrive_run_id']}"
                      if letter["status"] == "redriven" else "pending")
            print(f"{letter['created_at']}  {letter['job_name']}  {letter['job_id']}  #{letter['id']}  [{status}]\n"
                  f"    error: {letter['error']}\n    input: {letter['input']}")
    if not args.json:
        print(f"{len(letters)} dead letters" + (f" of {args.job}" if args.job else ""))
    return letters


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description="List dead letters, or re-drive them through the backfill DAG.")
    parser.add_argument("command", nargs="?", choices=("list", "redrive"), default="list")
    parser.add_argument("--job", help="only this job (e.g. forecast_worker)")
    parser.add_argument("--limit", type=int, default=50, help="list: at most this many letters")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--since", type=dt.datetime.fromisoformat, help="redrive: only letters created since this date or time (UTC, ISO)")
    parser.add_argument("--id", type=int, action="append", help="redrive: only this letter (repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="redrive: print the backfill confs, change nothing")
    mode.add_argument("--now", "--wait", dest="now", action="store_true",
                      help="redrive: run the backfill here with `airflow dags test` and wait for it")
    args = parser.parse_args(argv)
    return redrive(args) if args.command == "redrive" else list_letters(args)


if __name__ == "__main__":
    results = main()
    sys.exit(1 if any(r.get("status") == "failed" for r in results) else 0)

"""scripts.dead_letters on a real dead_letter table: list with status, redrive grouping and confs, marking."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.runtime.database import Database
from scripts import dead_letters

NOW = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
OLD = NOW - dt.timedelta(days=20)


def _insert(database, job_name: str, job_id: str, payload, created_at: dt.datetime = NOW,
            redriven_at: dt.datetime | None = None) -> int:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    with database.conn.cursor() as cur:
        cur.execute("INSERT INTO dead_letter (job_id, job_name, error, input, created_at, redriven_at, redrive_run_id) "
                    "VALUES (%s, %s, 'boom', %s, %s, %s, %s) RETURNING id",
                    (job_id, job_name, text, created_at, redriven_at, "earlier_run" if redriven_at else None))
        letter_id = cur.fetchone()[0]
    database.conn.commit()
    return letter_id


@pytest.fixture
def letters(database) -> dict[str, int]:
    with database.conn.cursor() as cur:
        cur.execute("DELETE FROM dead_letter")
    database.conn.commit()
    fw = {"shard": 0, "of": 2}
    return {
        "p12": _insert(database, "forecast_worker", "run1:0/2", {"product_id": 12, "as_of": "2024-05-31", **fw}),
        "p11": _insert(database, "forecast_worker", "run1:1/2", {"product_id": 11, "as_of": "2024-05-31", **fw}),
        "p12_again": _insert(database, "forecast_worker", "run2:0/2", {"product_id": 12, "as_of": "2024-05-31", **fw}),
        "p5_old": _insert(database, "forecast_worker", "run0:0/2", {"product_id": 5, "as_of": "2024-05-24", **fw}, OLD),
        "c41": _insert(database, "order_insights", "run3:0/1", {"customer_id": 41, "as_of": "2024-05-31", "days": 30}),
        "c40": _insert(database, "order_insights", "run3:0/1", {"customer_id": 40, "as_of": "2024-05-31", "days": 30}),
        "no_id": _insert(database, "sample_job", "s:0/1", {"id": 1}),
        "not_json": _insert(database, "forecast_worker", "run1:1/2", "not json"),
        "done": _insert(database, "forecast_worker", "run1:1/2", {"product_id": 99, "as_of": "2024-05-31"},
                        redriven_at=NOW - dt.timedelta(days=1)),
    }


def _marks(database) -> dict[int, tuple]:
    with database.conn.cursor() as cur:
        cur.execute("SELECT id, redriven_at, redrive_run_id FROM dead_letter")
        rows = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
    database.conn.commit()
    return rows


def test_dry_run_groups_by_job_and_as_of_and_changes_nothing(database, letters, capsys):
    before = _marks(database)
    groups = dead_letters.main(["redrive", "--dry-run"])
    assert [g["conf"] for g in groups] == [
        {"job": "forecast_worker", "start_date": "2024-05-24", "end_date": "2024-05-24", "product_ids": [5],
         "dry_run": False},
        {"job": "forecast_worker", "start_date": "2024-05-31", "end_date": "2024-05-31", "product_ids": [11, 12],
         "dry_run": False},
        {"job": "order_insights", "start_date": "2024-05-31", "end_date": "2024-05-31", "user_ids": [40, 41],
         "dry_run": False},
    ]
    assert [g["letter_ids"] for g in groups] == [
        [letters["p5_old"]], sorted([letters["p11"], letters["p12"], letters["p12_again"]]),
        sorted([letters["c40"], letters["c41"]])]
    assert {g["status"] for g in groups} == {"dry_run"}
    out = capsys.readouterr()
    assert [json.loads(line) for line in out.out.splitlines()] == [g["conf"] for g in groups]
    assert f"cannot re-drive letter {letters['no_id']}" in out.err and f"letter {letters['not_json']}" in out.err
    assert "8 pending letters in 3 groups, 2 cannot be re-driven" in out.err
    assert _marks(database) == before


def test_redrive_selects_by_job_since_and_id(database, letters):
    by_job = dead_letters.main(["redrive", "--dry-run", "--job", "order_insights"])
    assert [g["conf"]["user_ids"] for g in by_job] == [[40, 41]]
    since = dead_letters.main(["redrive", "--dry-run", "--job", "forecast_worker",
                               "--since", (OLD + dt.timedelta(days=1)).date().isoformat()])
    assert [g["conf"]["start_date"] for g in since] == ["2024-05-31"]
    by_id = dead_letters.main(["redrive", "--dry-run", "--id", str(letters["p12_again"]), "--id", str(letters["c40"])])
    assert [(g["conf"]["job"], g["letter_ids"]) for g in by_id] == [
        ("forecast_worker", [letters["p12_again"]]), ("order_insights", [letters["c40"]])]


def test_groups_are_split_at_the_backfill_id_limit():
    rows = [{"id": i, "job_name": "forecast_worker", "input": json.dumps({"product_id": 100 + i % 5, "as_of": "2024-05-31"})}
            for i in range(10)]
    groups, skipped = dead_letters.group_letters(rows, max_ids=2)
    assert not skipped
    assert [g["conf"]["product_ids"] for g in groups] == [[100, 101], [102, 103], [104]]
    assert groups[0]["letter_ids"] == [0, 1, 5, 6]


def test_marked_letters_are_not_redriven_again_and_list_shows_status(database, letters, capsys):
    at = NOW.replace(microsecond=0)
    with Database("recs_db") as db:
        dead_letters.mark_redriven(db, [letters["p11"], letters["p12"], letters["p12_again"]], "redrive__run_a", at)
        dead_letters.mark_redriven(db, [letters["p11"]], "redrive__run_b", at)  # already marked: unchanged
    marks = _marks(database)
    assert marks[letters["p11"]] == (at, "redrive__run_a") and marks[letters["p12_again"]] == (at, "redrive__run_a")
    assert marks[letters["c40"]] == (None, None)

    groups = dead_letters.main(["redrive", "--dry-run", "--job", "forecast_worker"])
    assert [g["conf"]["product_ids"] for g in groups] == [[5]]

    capsys.readouterr()
    listed = {letter["id"]: letter["status"] for letter in dead_letters.main(["list", "--limit", "100"])}
    assert listed == {i: "redriven" if name in ("p11", "p12", "p12_again", "done") else "pending"
                      for name, i in letters.items()}
    out = capsys.readouterr().out
    assert f"#{letters['p11']}  [re-driven {at} by redrive__run_a]" in out
    assert f"#{letters['c40']}  [pending]" in out


def test_redrive_now_runs_the_job_dag_and_marks_the_letters(dag_runner, database, redis_client):
    """The letters of products that failed on 2024-06-02 go through the forecast_worker DAG in-process,
    with the conf a backfill would give it."""
    data = generate(customers=120, products=30, start="2023-06-05", end="2024-06-03", seed=11)
    load_source(database, data.orders, data.products, data.customers)
    with database.conn.cursor() as cur:
        cur.execute("DELETE FROM dead_letter")
        cur.execute("DELETE FROM backfill_report")
    database.conn.commit()
    busiest = data.orders.groupby("product_id")["order_id"].nunique().sort_values(ascending=False)
    products = sorted(int(p) for p in busiest.index[:2])
    ids = [_insert(database, "forecast_worker", f"run:{i}/2", {"product_id": p, "as_of": "2024-06-02", "shard": i, "of": 2})
           for i, p in enumerate(products)]

    groups = dead_letters.main(["redrive", "--now", "--job", "forecast_worker"])
    assert [g["status"] for g in groups] == ["succeeded"], groups
    assert groups[0]["conf"]["product_ids"] == products
    marks = _marks(database)
    assert groups[0]["run_id"].startswith("manual__")  # the dags test run's id, as the UI shows it
    assert all(marks[i][0] is not None and marks[i][1] == groups[0]["run_id"] for i in ids)
    assert {int(k.decode().split(":")[1]) for k in redis_client.scan_iter("forecast:[0-9]*")} == set(products)
    assert dead_letters.main(["redrive", "--dry-run"]) == []  # nothing left to re-drive


def test_redrive_triggers_a_backfill_run_with_its_run_id(airflow_home, database, letters):
    """Without --now the group becomes a queued backfill run (no scheduler runs here) under the recorded run id."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], check=True, capture_output=True)
    groups = dead_letters.main(["redrive", "--job", "order_insights"])
    assert [g["status"] for g in groups] == ["triggered"], groups
    runs = subprocess.run([sys.executable, "-m", "airflow", "dags", "list-runs", "backfill", "-o", "json"],
                          check=True, capture_output=True, text=True).stdout
    listed = json.loads(next(line for line in runs.splitlines() if line.startswith("[{")))  # after the log lines
    assert [r["state"] for r in listed if r["run_id"] == groups[0]["run_id"]] == ["queued"], runs[-2000:]
    marks = _marks(database)
    assert marks[letters["c40"]][1] == marks[letters["c41"]][1] == groups[0]["run_id"]
    assert marks[letters["p11"]] == (None, None)

"""maintenance on real PostgreSQL and Redis: what expires goes, what does not stays, dry_run changes nothing."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from include.jobs import maintenance as job
from include.runtime import artifacts
from include.runtime.model_loaders import CF_MODEL, FAISS_MODEL
from include.runtime.model_store import ModelStore

DAY = dt.timedelta(days=1)
RECS_TTL, FORECAST_TTL, POPULARITY_TTL = 691200, 604800, 900
# Small chunks and batches, so the scan, the unlinks and the deletes each take several rounds.
ENV = {"REDIS_CHUNK_SIZE": "5", "MAINTENANCE_DELETE_BATCH": "1"}


def _week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def planted(redis_client, database):
    """Keys of seven weeks around last week's pointer, TTL-less keys, old and young rows, model versions."""
    today = _now().date()
    pointer = _week(today - 7 * DAY)  # weekly_recs published last week; keep_weeks 2 keeps pointer-2 .. now
    expired = [_week(today - 7 * DAY * n) for n in (6, 4)]
    kept = [_week(today - 7 * DAY * n) for n in (3, 2, 1)]
    redis_client.set("recs:current_week", pointer)
    for week in expired:
        for customer in (1, 2, 3):
            redis_client.set(f"{week}:{customer}", "{}")
    for week in kept:
        for customer in (1, 2):
            redis_client.set(f"{week}:{customer}", "{}")  # lost its TTL: gets RECS_TTL
        for customer in (3, 4):
            redis_client.set(f"{week}:{customer}", "{}", ex=100)
    for customer in (1, 2):
        redis_client.set(f"{_week(today)}:{customer}", "{}", ex=500)
    redis_client.set("forecast:7", "{}")  # gets FORECAST_CACHE_TTL
    redis_client.set("forecast:8", "{}", ex=50)
    redis_client.set("forecast:metadata:last_run", "{}")  # gets FORECAST_CACHE_TTL
    redis_client.zadd("popular:global", {"1": 1.0})  # gets POPULARITY_TTL
    redis_client.set("cf:metadata:last_run", "{}")  # no TTL by contract
    redis_client.hset("affinity:user:5", mapping={"Books": 1.0})  # AFFINITY_TTL 0: no TTL
    redis_client.set("someone:else", "x")  # not ours

    now = _now().replace(tzinfo=None)
    with database.conn.cursor() as cur:
        cur.execute("DELETE FROM dead_letter")
        cur.execute("DELETE FROM backfill_report")
        for days, job_id in ((45, "old:0/1"), (31, "old:1/1"), (29, "young:0/1"), (1, "young:1/1")):
            cur.execute("INSERT INTO dead_letter (job_id, job_name, error, input, created_at) VALUES (%s, %s, %s, %s, %s)",
                        (job_id, "forecast_worker", "boom", '{"product_id": 1, "as_of": "2024-05-31"}',
                         now - dt.timedelta(days=days)))
        for days, run_id in ((200, "old-a"), (91, "old-b"), (89, "young-a"), (10, "young-b")):
            cur.execute("INSERT INTO backfill_report (run_id, job_name, as_of, succeeded, failed, skipped, created_at) "
                        "VALUES (%s, 'forecast_worker', %s, 1, 0, 0, %s)",
                        (run_id, dt.date(2024, 5, 31), now - dt.timedelta(days=days)))
    database.conn.commit()

    root = artifacts.root() / "models"
    for name in (CF_MODEL, FAISS_MODEL):
        shutil.rmtree(root / name, ignore_errors=True)
    cf = ModelStore(CF_MODEL)  # CF_KEEP_VERSIONS 5, CF_KEEP_DAYS 7: the promoted oldest and the last 5 stay
    cf_versions = [cf.save({"x": [1.0]}, {}, now=_now() - dt.timedelta(days=30 - i)) for i in range(7)]
    cf.promote(cf_versions[0], "test", now=_now() - dt.timedelta(days=23))
    faiss = ModelStore(FAISS_MODEL)  # the live index stays, the one it replaced 8 days ago goes (24 h)
    faiss_versions = [faiss.save({"x": [1.0]}, {}, now=_now() - dt.timedelta(days=10 - i)) for i in range(3)]
    faiss.promote(faiss_versions[0], "test", now=_now() - dt.timedelta(days=10))
    faiss.promote(faiss_versions[2], "test", now=_now() - dt.timedelta(days=8))
    return {"expired": expired, "kept": kept, "pointer": pointer, "this_week": _week(today),
            "cf": cf_versions, "faiss": faiss_versions}


def _snapshot(redis_client, database) -> dict:
    keys = {k.decode(): redis_client.ttl(k) == -1 for k in redis_client.scan_iter(count=100)}
    with database.conn.cursor() as cur:
        cur.execute("SELECT job_id FROM dead_letter ORDER BY job_id")
        letters = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT run_id FROM backfill_report ORDER BY run_id")
        reports = [r[0] for r in cur.fetchall()]
    database.conn.commit()
    return {"keys": keys, "letters": letters, "reports": reports,
            "models": {n: ModelStore(n).version_ids() for n in (CF_MODEL, FAISS_MODEL)}}


def _job_state() -> dict:
    """metrics.job_run's state Variable in the metadata DB the DAG runs use, read as an operator would."""
    out = subprocess.run([sys.executable, "-m", "airflow", "variables", "get", f"nightshift_job_state_{job.JOB}"],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    start = out.stdout.find("\n{")  # the value (indented JSON) follows any log lines
    if out.returncode:  # no run has written it yet
        return {}
    return json.loads(out.stdout[start:] if start >= 0 else out.stdout)


def _summary_value(output: str, action: str) -> int:
    found = re.findall(rf"{action}\s*: (\d+)", output)
    assert found, f"no {action} in the summary log"
    return int(found[-1])


def test_dry_run_changes_nothing_and_counts_what_would_go(dag_runner, redis_client, database, planted):
    before, state = _snapshot(redis_client, database), _job_state()
    out = dag_runner("maintenance", {"dry_run": True}, env=ENV)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _snapshot(redis_client, database) == before
    assert _job_state() == state  # a dry run leaves the job state alone
    output = out.stdout + out.stderr
    assert {a: _summary_value(output, a) for a in job.ACTIONS} == {
        "week_keys_restored": 0, "week_keys_deleted": 6, "ttl_set": 9, "orphaned_pointers": 0, "dead_letters_deleted": 2,
        "backfill_reports_deleted": 2, "model_versions_deleted": 3}


def test_expires_old_weeks_rows_and_versions_and_keeps_the_rest(dag_runner, redis_client, database, planted):
    out = dag_runner("maintenance", {}, env=ENV)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    output = out.stdout + out.stderr
    assert _summary_value(output, "week_keys_deleted") == 6 and _summary_value(output, "ttl_set") == 9
    state = _job_state()  # job_run: records = everything removed or fixed
    assert state["last_status"] == "success" and state["records"] == 6 + 9 + 2 + 2 + 3

    week_keys = sorted(k.decode() for k in redis_client.scan_iter(match="*-W*:*"))
    assert not [k for k in week_keys if k.split(":")[0] in planted["expired"]]
    assert len(week_keys) == 3 * 4 + 2  # three kept weeks of 4 customers, this week's 2
    for week in planted["kept"]:
        assert 691000 < redis_client.ttl(f"{week}:1") <= RECS_TTL  # TTL restored
        assert 0 < redis_client.ttl(f"{week}:3") <= 100  # its own TTL untouched
    assert 0 < redis_client.ttl(f"{planted['this_week']}:1") <= 500
    assert FORECAST_TTL - 100 < redis_client.ttl("forecast:7") <= FORECAST_TTL
    assert FORECAST_TTL - 100 < redis_client.ttl("forecast:metadata:last_run") <= FORECAST_TTL
    assert 0 < redis_client.ttl("forecast:8") <= 50
    assert POPULARITY_TTL - 100 < redis_client.ttl("popular:global") <= POPULARITY_TTL
    for key in ("recs:current_week", "cf:metadata:last_run", "affinity:user:5", "someone:else"):
        assert redis_client.ttl(key) == -1, key
    assert redis_client.get("recs:current_week").decode() == planted["pointer"]

    after = _snapshot(redis_client, database)
    assert after["letters"] == ["young:0/1", "young:1/1"]
    assert after["reports"] == ["young-a", "young-b"]
    cf, faiss = planted["cf"], planted["faiss"]
    assert after["models"] == {CF_MODEL: [cf[0]] + cf[2:], FAISS_MODEL: [faiss[2]]}
    assert ModelStore(CF_MODEL).current() == cf[0] and ModelStore(FAISS_MODEL).current() == faiss[2]

    # a second run finds nothing left to do
    again = dag_runner("maintenance", {}, env=ENV)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert {a: _summary_value(again.stdout + again.stderr, a) for a in job.ACTIONS} == dict.fromkeys(job.ACTIONS, 0)


def _run(**overrides) -> job.MaintenanceRun:
    settings = {"run_at": _now().isoformat(timespec="seconds"), "keep_weeks": 2, "dead_letter_days": 30,
                "backfill_report_days": 90, "delete_batch": 2, "chunk_size": 3, "dry_run": False}
    return job.MaintenanceRun(**{**settings, **overrides})


def test_orphaned_pointers_are_reported_not_changed(redis_client, database, planted):
    today = _now().date()
    orphan_week = _week(today - 7 * DAY * 10)  # no keys of that week exist
    redis_client.set("recs:current_week", orphan_week)
    shutil.rmtree(ModelStore(FAISS_MODEL).path(planted["faiss"][2]))  # the live index's directory is gone

    redis = job.expire_redis_keys(_run())
    # the reference is now the orphaned week, ten weeks back: nothing of the planted weeks is older
    assert redis["orphaned_pointers"] == 1 and redis["week_keys_deleted"] == 0
    assert orphan_week in redis["orphans"][0]
    assert redis_client.get("recs:current_week").decode() == orphan_week

    models = job.retain_model_versions(_run())
    assert models["orphaned_pointers"] == 1 and FAISS_MODEL in models["orphans"][0]
    assert ModelStore(FAISS_MODEL).version_ids() == planted["faiss"][:2]  # no retention without a live version
    assert models["versions_removed"] == {CF_MODEL: [planted["cf"][1]]}


def test_keep_weeks_and_retention_days_follow_the_params(redis_client, database, planted):
    run = _run(keep_weeks=0, dead_letter_days=2, backfill_report_days=300, dry_run=True)
    counts = job.expire_redis_keys(run)
    assert counts["week_keys_deleted"] == 6 + 2 * 4  # only the pointer's week and this week stay
    assert counts["expired_weeks"] == sorted(planted["expired"] + planted["kept"][:2])
    assert job.expire_dead_letters(run) == {"dead_letters_deleted": 3}
    assert job.expire_backfill_reports(run) == {"backfill_reports_deleted": 0}

    real = job.expire_dead_letters(_run(dead_letter_days=2))
    assert real == {"dead_letters_deleted": 3}
    assert _snapshot(redis_client, database)["letters"] == ["young:1/1"]


def test_restore_week_rewrites_the_weeks_keys_from_the_backup_table(dag_runner, redis_client, database):
    """The maintenance DAG's restore_week param: Redis lost the week, the table gives it back."""
    week = _week(_now().date())
    expires = (_now() + DAY).replace(tzinfo=None, microsecond=0)
    with database.conn.cursor() as cur:
        cur.execute('DELETE FROM "WeeklyRecommendation" WHERE "Week" = %s', (week,))
        cur.executemany(
            'INSERT INTO "WeeklyRecommendation" ("CustomerID", "Week", "ProductID", "Rank", "Score", "Source", '
            '"GeneratedAt", "ProductName", "Category", "PredictedQuantity", "LastPurchased", '
            '"PurchaseFrequencyDays", "ExpiresAt") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)',
            [(7, week, 11, 1, 0.91234, "repeat", dt.datetime(2024, 6, 3, 6), "Tea", "Drinks", 2.0,
              dt.date(2024, 5, 20), 14.0, expires),
             (7, week, 12, 2, 0.5, "discovery", dt.datetime(2024, 6, 3, 6), "Cups", "Home", None, None, None, expires),
             (8, week, 11, 1, 0.7, "similar", dt.datetime(2024, 6, 3, 6), "Tea", "Drinks", None, None, None,
              dt.datetime(2000, 1, 1))])  # already expired: stays gone
    database.conn.commit()
    redis_client.set("recs:current_week", week)

    out = dag_runner("maintenance", {"restore_week": week}, env=ENV)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert _summary_value(out.stdout + out.stderr, "week_keys_restored") == 1
    assert redis_client.exists(f"{week}:8") == 0
    assert abs(redis_client.execute_command("EXPIRETIME", f"{week}:7") - expires.replace(
        tzinfo=dt.timezone.utc).timestamp()) <= 1
    assert json.loads(redis_client.get(f"{week}:7")) == {
        "customer_id": 7, "week": week, "generated_at": "2024-06-03T06:00:00+00:00", "recommendations": [
            {"product_id": 11, "product_name": "Tea", "score": 0.9123, "source": "repeat", "category": "Drinks",
             "predicted_quantity": 2.0, "last_purchased": "2024-05-20", "purchase_frequency_days": 14.0, "rank": 1},
            {"product_id": 12, "product_name": "Cups", "score": 0.5, "source": "discovery", "category": "Home",
             "predicted_quantity": None, "last_purchased": None, "purchase_frequency_days": None, "rank": 2}]}

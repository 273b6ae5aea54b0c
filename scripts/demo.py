"""`make demo`: every job DAG end to end on real servers, and what each one wrote.

Uses the configured connections (AIRFLOW_CONN_SOURCE_DB / _RECS_DB / _REDIS_DEFAULT, or
NIGHTSHIFT_PG_URL / NIGHTSHIFT_REDIS_URL) when set; otherwise starts embedded PostgreSQL and
Redis under .run/. Loads synthetic order data, then runs each DAG with `airflow dags test`
in dependency order. The backfill triggers runs of a job's own DAG, which only a scheduler runs:
it runs last but one on a real cluster (scheduler, dag-processor, API server; its metadata
database a fresh one in the same PostgreSQL), triggered over the REST API.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
AS_OF = "2024-12-29"
DATA = {"customers": 2000, "products": 400, "start": "2022-01-03", "end": "2024-12-30", "seed": 42}  # load_data flags

# Dependency order, and per job where its output shows: the run metadata key, a key pattern, tables.
JOBS = {
    "popularity": {"conf": {"as_of": f"{AS_OF}T23:00:00"}, "meta": None, "keys": "popular:[gc]*", "tables": []},
    "popular_segments": {"conf": {"as_of": f"{AS_OF}T23:00:00"}, "meta": None, "keys": "popular:segment:*",
                         "tables": ["popular_items"]},
    "user_affinity": {"conf": {"as_of": f"{AS_OF}T23:00:00", "full_rebuild": True}, "meta": None,
                      "keys": "affinity:user:*", "tables": ["user_category_affinity", "user_profiles"]},
    "cf_training": {"conf": {"as_of_date": AS_OF}, "meta": "cf:metadata:last_run", "keys": None,
                    "tables": ["user_similarities"], "artifacts": "cf_als"},
    "faiss_rebuild": {"conf": {}, "meta": "faiss:metadata:last_run", "keys": None, "tables": [],
                      "artifacts": "faiss_products"},
    "weekly_recs": {"conf": {"as_of_date": AS_OF}, "meta": "recs:metadata:last_run", "keys": "2024-W52:*",
                    "tables": ["WeeklyRecommendation"]},
    "forecast_worker": {"conf": {"as_of_date": AS_OF}, "meta": "forecast:metadata:last_run", "keys": "forecast:[0-9]*",
                        "tables": []},
    "order_insights": {"conf": {"as_of_date": AS_OF}, "meta": "recommendations:metadata:last_run",
                       "keys": "recommendations:user:*", "tables": []},
    # the week before AS_OF again for five customers, through a triggered weekly_recs run: their 2024-W51
    # keys and the report row; the metadata (and recs:current_week) stay on 2024-W52
    "backfill": {"conf": {"job": "weekly_recs", "start_date": "2024-12-16", "end_date": "2024-12-22",
                          "user_ids": [1, 2, 3, 4, 5]}, "meta": None, "keys": "2024-W51:*",
                 "tables": ["backfill_report"], "cluster": True, "report": True},
    # last: expires what the jobs above left behind (its summary is in the run log); the tables it trims
    "maintenance": {"conf": {}, "meta": None, "keys": None, "tables": ["dead_letter", "backfill_report"]},
}


def _airflow_env(connections: dict[str, str]) -> dict[str, str]:
    env = {**connections, **os.environ}
    env.update({
        "AIRFLOW_HOME": str(RUN_DIR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "ARTIFACT_ROOT": env.get("ARTIFACT_ROOT", (RUN_DIR / "artifacts").as_uri()),
        "PYTHONPATH": str(ROOT),
    })
    return env


def _airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, cwd=ROOT, capture_output=True, text=True)


def _run_on_cluster(env: dict[str, str], job: str, conf: dict) -> tuple[int, str]:
    """Trigger `job` with `conf` on a real Airflow cluster and wait for it; (exit code, log tail)."""
    from types import SimpleNamespace

    from scripts.airflow_cluster import running_cluster

    admin = env["AIRFLOW_CONN_RECS_DB"].replace("postgres://", "postgresql://", 1)
    with running_cluster(SimpleNamespace(postgres_url=admin), "demo", {d.stem: d for d in (ROOT / "dags").glob("*.py")},
                         env={k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_") or k == "ARTIFACT_ROOT"},
                         redis_url=env["AIRFLOW_CONN_REDIS_DEFAULT"]) as cluster:
        status, body = cluster.request("POST", f"/api/v2/dags/{job}/dagRuns", {"logical_date": None, "conf": conf})
        if status != 200:
            return 1, json.dumps(body)

        def finished():
            code, run = cluster.request("GET", f"/api/v2/dags/{job}/dagRuns/{body['dag_run_id']}")
            return run["state"] if code == 200 and run["state"] in ("success", "failed") else None

        state = cluster.wait_for(f"{job} run {body['dag_run_id']}", finished)
        return (0, "") if state == "success" else (1, cluster.logs())


def _load_data(env: dict[str, str], scratch: str | None) -> dict:
    """`scratch`: the name of a database the demo owns (its embedded server keeps its data between
    runs), whose order data it replaces; any other must hold none (load_data refuses)."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
    from scripts import load_data, migrate

    migrate.main()
    replace = ["--replace", f"--confirm={scratch}"] if scratch else []
    return load_data.main(["synthetic", *replace, *(f"--{k}={v}" for k, v in DATA.items())])["written"]


def _report(job: str, spec: dict) -> None:
    from include.runtime.database import Database
    from include.runtime.redis_cache import RedisCache

    cache = RedisCache()
    if spec["meta"]:
        print(f"    {spec['meta']} = {json.dumps(cache.get_json(spec['meta']))}")
    if spec["keys"]:
        keys = sorted(k.decode() for k in cache.client.scan_iter(match=spec["keys"], count=10_000))
        print(f"    {len(keys)} keys like {spec['keys']}, e.g. {', '.join(keys[:3])}")
        if keys:
            ttl = cache.client.ttl(keys[0])
            kind = cache.client.type(keys[0]).decode()  # sorted sets (popular:*), hashes (affinity:user:*)
            value = (cache.client.zrevrange(keys[0], 0, 4, withscores=True) if kind == "zset"
                     else cache.client.hgetall(keys[0]) if kind == "hash" else cache.get(keys[0]))
            print(f"    {keys[0]} (ttl {ttl}s) = {str(value)[:300]}...")
    with Database("recs_db") as db:
        for table in spec["tables"]:
            with db.conn.cursor() as cur:  # table names come from the fixed JOBS list above
                cur.execute(f'SELECT count(*) FROM "{table}"')
                print(f"    table {table}: {cur.fetchone()[0]} rows")
            db.conn.commit()
    cache.close()
    if spec.get("report"):  # per date: what the triggered job run did with the ids, and why some got nothing
        with Database("recs_db") as db, db.conn.cursor() as cur:
            cur.execute("SELECT as_of, succeeded, failed, skipped, detail FROM backfill_report ORDER BY as_of")
            for as_of, succeeded, failed, skipped, raw in cur.fetchall():
                detail = json.loads(raw)
                print(f"    report {as_of}: {detail['status']}, succeeded {succeeded}, failed {failed}, "
                      f"skipped {skipped}"
                      + (f" ({detail['skipped_reason']})" if detail.get("skipped_reason") else "")
                      + f"; job run {detail['run_id']}")
    if spec.get("artifacts"):  # a versioned model: its pointer and versions under the artifact root
        from urllib.parse import unquote, urlsplit

        from include.runtime.model_store import ModelStore

        root = Path(unquote(urlsplit(os.environ.get("ARTIFACT_ROOT", (RUN_DIR / "artifacts").as_uri())).path))
        store = ModelStore(spec["artifacts"], root=root)
        pointer = store.pointer() or {}
        print(f"    artifacts {store.base}: current {pointer.get('version')} ({pointer.get('reason')}), "
              f"versions {store.version_ids()}")
        if pointer.get("version"):
            files = store.metadata(pointer["version"])["files"]
            print("    files: " + ", ".join(f"{n} {f['shape']} sha256 {f['sha256'][:12]}" for n, f in files.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="*", help="only these DAGs (default: every DAG in dags/)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from include.runtime.services import resolve

    RUN_DIR.mkdir(exist_ok=True)
    configured = "AIRFLOW_CONN_SOURCE_DB" in os.environ and "AIRFLOW_CONN_REDIS_DEFAULT" in os.environ
    services = resolve(RUN_DIR / "services", use_local=False) if not configured else None
    try:
        env = _airflow_env(services.airflow_env() if services else {})
        origin = services.origin if services else {"postgres": "configured", "redis": "configured"}
        print(f"servers: postgres {origin['postgres']}, redis {origin['redis']}")
        started = time.monotonic()
        for step in (("db", "migrate"), ("pools", "set", "source_db_slots", "4", "source database slots")):
            out = _airflow(env, *step)
            if out.returncode:
                print(out.stdout[-3000:], out.stderr[-3000:])
                return out.returncode
        print(f"airflow metadata database ready in {time.monotonic() - started:.1f}s ({env['AIRFLOW_HOME']})")
        started = time.monotonic()
        own = origin["postgres"] == "embedded"  # started here under .run/: a scratch database
        written = _load_data(env, services.postgres_url.rsplit("/", 1)[1] if own else None)
        print(f"synthetic order data loaded in {time.monotonic() - started:.1f}s: {written}")

        present = {p.stem for p in (ROOT / "dags").glob("*.py")}
        jobs = [j for j in JOBS if j in present and (not args.jobs or j in args.jobs)]
        failed = []
        for job in jobs:
            spec = JOBS[job]
            started = time.monotonic()
            if spec.get("cluster"):
                code, log = _run_on_cluster(env, job, spec["conf"])
            else:
                out = _airflow(env, "dags", "test", job, "--conf", json.dumps(spec["conf"]))
                code, log = out.returncode, out.stdout + out.stderr
            seconds = time.monotonic() - started
            status = "ok" if code == 0 else "FAILED"
            where = " on the scheduler" if spec.get("cluster") else ""
            print(f"\n== {job}: {status} in {seconds:.1f}s{where} (conf {json.dumps(spec['conf'])})")
            if code:
                failed.append(job)
                print(log[-4000:])
                continue
            _report(job, spec)
        print(f"\n{len(jobs) - len(failed)} of {len(jobs)} jobs succeeded" + (f"; failed: {failed}" if failed else ""))
        return 1 if failed else 0
    finally:
        if services:
            services.stop()


if __name__ == "__main__":
    sys.exit(main())

"""A mapped shard killed with SIGKILL under the real scheduler (LocalExecutor), then retried.

The shard is caught at a known point: the test holds a SHARE lock on WeeklyRecommendation, so
every `publish` shard blocks at the delete of its backup rows, after its Redis writes. The process that
owns the blocked PostgreSQL session (found through its TCP port) is the task process running
that shard. Two faults:
- `task`: the task process gets SIGKILL; its supervisor sees it die without a final state and
  reports it for retry.
- `worker`: the supervisor (the LocalExecutor worker) gets SIGKILL first, then the task process,
  as when a worker machine dies: nobody reports, and the scheduler finds the task instance by
  its missing heartbeats (timeout made 30 s here instead of 300).
Either way the scheduler retries the shard after its retry_delay, made 1 s for this test only by
a cluster policy in airflow_local_settings.py (the deployment-level override Airflow offers for
task arguments), and the run's keys and rows are exact.
"""
from __future__ import annotations

import json
import signal

import psycopg
import pytest

from tests.e2e.cluster import AS_OF, ROOT, WEEK, active_customers, blocked_shard, process_on_port, running_cluster

LOCAL_SETTINGS = '''\
import datetime as dt


def task_policy(task):
    """Test only: retry after 1 s instead of DEFAULT_ARGS' 1 min."""
    task.retry_delay = dt.timedelta(seconds=1)
    task.retry_policy = None
'''


@pytest.fixture(scope="module")
def fault_cluster(services, database, data, tmp_path_factory):
    config = tmp_path_factory.mktemp("config")
    (config / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    # a task whose supervisor dies too is found within seconds, not the default 5 minutes
    with running_cluster(services, "e2e-faults", {"weekly_recs": ROOT / "dags" / "weekly_recs.py"}, env={
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3"},
            pythonpath=(config,)) as cluster:
        yield cluster


@pytest.mark.parametrize("kill", ["task", "worker"])
def test_a_shard_killed_with_sigkill_is_retried_and_the_run_is_exact(fault_cluster, services, database, data, kill):
    import redis

    cluster = fault_cluster
    with database.conn.cursor() as cur:
        cur.execute('DELETE FROM "WeeklyRecommendation" WHERE "Week" = %s', (WEEK,))
    database.conn.commit()
    client = redis.from_url(cluster.redis_url)
    client.flushdb()

    lock = psycopg.connect(services.postgres_url)
    lock.execute('LOCK TABLE "WeeklyRecommendation" IN SHARE MODE')  # reads pass, the shards' writes wait
    try:
        conf = {"as_of_date": AS_OF, "week": WEEK, "shard_count": 2}
        status, body = cluster.request("POST", "/api/v2/dags/weekly_recs/dagRuns", {"logical_date": None, "conf": conf})
        assert status == 200, body
        run_id = body["dag_run_id"]

        with psycopg.connect(services.postgres_url, autocommit=True) as admin:
            client_port, _ = cluster.wait_for("a shard blocked on its backup-row delete",
                                                    lambda: blocked_shard(admin), timeout=180, every=0.5)
        victim = process_on_port(client_port)
        assert victim is not None, f"no process owns the session on port {client_port}"
        title = " ".join(victim.cmdline())
        assert "airflow worker --" in title, title  # the task process (setproctitle), not the scheduler
        if kill == "worker":
            supervisor = victim.parent()
            assert "LocalExecutor" in " ".join(supervisor.cmdline()), supervisor.cmdline()
            supervisor.send_signal(signal.SIGKILL)
            supervisor.wait(timeout=30)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        lock.rollback()
        lock.close()

    def finished():
        status, body = cluster.request("GET", f"/api/v2/dags/weekly_recs/dagRuns/{run_id}")
        return body["state"] if status == 200 and body["state"] in ("success", "failed") else None

    state = cluster.wait_for(f"weekly_recs run {run_id}", finished)
    assert state == "success", cluster.logs()

    status, body = cluster.request("GET", f"/api/v2/dags/weekly_recs/dagRuns/{run_id}/taskInstances?task_id=publish")
    assert status == 200, body
    tries = sorted(ti["try_number"] for ti in body["task_instances"] if ti["task_id"] == "publish")
    assert tries == [1, 2], f"the killed shard ran twice, the other once: {tries}"
    status, body = cluster.request("GET", "/api/v2/eventLogs?dag_id=weekly_recs&limit=100")
    assert status == 200, body
    timeouts = [e for e in body["event_logs"] if e["event"] == "heartbeat timeout" and e["run_id"] == run_id]
    assert len(timeouts) == (1 if kill == "worker" else 0), timeouts  # who noticed: scheduler or supervisor

    active = active_customers(data, AS_OF)
    keys = {int(k.decode().split(":")[1]) for k in client.scan_iter(f"{WEEK}:*")}
    assert keys == active, "every active customer's key, no other"
    assert client.get("recs:current_week") == WEEK.encode()
    docs = {c: json.loads(client.get(f"{WEEK}:{c}")) for c in keys}
    client.close()
    with database.conn.cursor() as cur:
        cur.execute('SELECT "CustomerID", "Rank", "ProductID" FROM "WeeklyRecommendation" WHERE "Week" = %s '
                    'ORDER BY 1, 2', (WEEK,))
        rows = cur.fetchall()
    database.conn.commit()
    assert len(rows) == 25 * len(active) and len({(c, r) for c, r, _ in rows}) == len(rows), "no duplicate rows"
    backup: dict[int, list[int]] = {}
    for customer, _, product in rows:
        backup.setdefault(customer, []).append(product)
    assert set(backup) == active
    assert all([r["product_id"] for r in docs[c]["recommendations"]] == backup[c] for c in active)

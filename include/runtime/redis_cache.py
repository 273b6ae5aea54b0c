"""Redis writes and reads through the Airflow Redis connection, pipelined in chunks.

Failure model (DESIGN.md): the client itself retries a command or a pipeline chunk on a
connection error or timeout (`RETRIES` times, exponential backoff up to 2 s: a restart or
failover of a few seconds goes unnoticed; SET is idempotent, so a resent chunk is harmless).
A cache that still does not answer when a task first reaches it fails the run at once
(AirflowFailException naming the connection). A connection lost later, mid-write, is
raised as is: Airflow retries the task, and the retry overwrites the same keys.

The database is the `db` extra (RedisHook reads only that) or, as in any Redis URL, the path:
`redis://host:6379/11` writes to db 11, never silently to db 0; a path and an extra that disagree,
or a path that is no number, fail the run.
"""
from __future__ import annotations

import json
import logging
from functools import cached_property
from typing import Any, Iterable, Iterator

from include.runtime.config import REDIS_CONN_ID

log = logging.getLogger(__name__)

RETRIES = 5  # client-side, over ~5 s: 0.2, 0.4, 0.8, 1.6, 2 s


def database(name: str, path: str | None, extra_db: Any = None) -> int:
    """The Redis database a connection or URL `name` means: its `db` extra (or ?db= query), else
    the number in its URL path, else 0. redis-py's from_url ignores a bad path and lets ?db= win
    silently; here both are errors, since either would write a run somewhere unintended."""
    from airflow.sdk.exceptions import AirflowFailException

    path = (path or "").strip("/")
    if path and not path.isdigit():
        raise AirflowFailException(
            f"Redis connection {name!r} has the URL path /{path}, expected a database number: write "
            "redis://host:6379/<db> (e.g. /11), or drop the path and set the `db` extra.")
    if extra_db in (None, ""):
        return int(path) if path else 0
    try:
        extra = int(extra_db)
    except (TypeError, ValueError):
        raise AirflowFailException(
            f"Redis connection {name!r} has the `db` extra {extra_db!r}, expected a database number: "
            "fix the ?db= value or the extra.") from None
    if path and int(path) != extra:
        raise AirflowFailException(
            f"Redis connection {name!r} names two databases: /{path} in its URL path and db={extra} in "
            f"its `db` extra (?db=): keep one, e.g. redis://host:6379/{path} without ?db=, or make them equal.")
    return extra


class RedisCache:
    """The cache the API reads; one client per object, built lazily by Airflow's RedisHook."""

    def __init__(self, conn_id: str = REDIS_CONN_ID, chunk_size: int = 1000) -> None:
        self.conn_id = conn_id
        self.chunk_size = chunk_size

    @cached_property
    def client(self):
        from airflow.providers.redis.hooks.redis import RedisHook
        from airflow.sdk.exceptions import AirflowFailException
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError, TimeoutError
        from redis.retry import Retry

        hook = RedisHook(redis_conn_id=self.conn_id)
        client = hook.get_conn()
        db = database(self.conn_id, hook.get_connection(self.conn_id).schema, hook.db)
        if db != (hook.db or 0):  # named by the URL path only: the hook built the client for db 0
            if hook.cluster:
                raise AirflowFailException(
                    f"Redis connection {self.conn_id!r} names database {db}, but Redis in cluster mode only "
                    "has database 0: drop the path from the connection URL.")
            client.connection_pool.connection_kwargs["db"] = db  # before the pool opens any connection
            hook.db = db
        log.info("Redis connection %r writes to %s:%s db %s", self.conn_id, hook.host, hook.port or 6379, db)
        client.set_retry(Retry(ExponentialBackoff(cap=2.0, base=0.1), RETRIES))
        try:
            client.ping()
        except (ConnectionError, TimeoutError) as exc:
            client.close()
            raise AirflowFailException(
                f"Redis connection {self.conn_id!r} ({hook.host}:{hook.port}, db {hook.db or 0}) is unreachable "
                f"after {RETRIES} retries: {exc}. Start Redis or fix the connection, then clear the failed "
                "task.") from exc
        return client

    def close(self) -> None:
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()

    def set_many(self, items: Iterable[tuple[str, str | bytes]], ttl: int | None,
                 expire_at: int | None = None) -> int:
        """SET every (key, value) with `ttl` seconds (None: no expiry), or to expire at the unix time
        `expire_at` (EXAT: a restore gives back the very expiry a key had), one pipeline per chunk.
        Each SET replaces one key whole: a reader sees the old or the new value, never none."""
        written = 0
        pipe = self.client.pipeline(transaction=False)
        for key, value in items:
            pipe.set(key, value, ex=None if expire_at else ttl, exat=expire_at)
            written += 1
            if written % self.chunk_size == 0:
                pipe.execute()
        pipe.execute()
        return written

    def delete_many(self, keys: list[str]) -> int:
        """UNLINK `keys` in chunks; how many existed."""
        return sum(int(self.client.unlink(*keys[begin:begin + self.chunk_size]) or 0)
                   for begin in range(0, len(keys), self.chunk_size))

    def scan(self, pattern: str | None = None, count: int = 10_000) -> Iterator[list[bytes]]:
        """The keys matching a glob `pattern` (every key without one), one SCAN reply of about
        `count` keys at a time, as stored (never KEYS)."""
        cursor = 0
        while True:
            cursor, keys = self.client.scan(cursor, match=pattern, count=count)
            if keys:
                yield keys
            if int(cursor) == 0:
                return

    def matching(self, pattern: str) -> list[bytes]:
        """The keys matching a glob `pattern`."""
        return [key for keys in self.scan(pattern) for key in keys]

    def exist(self, keys: list[str]) -> list[bool]:
        """Whether each of `keys` exists, one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return [bool(x) for x in pipe.execute()] if keys else []

    def set_json(self, key: str, value: Any, ttl: int | None = None) -> None:
        self.client.set(key, json.dumps(value, default=str), ex=ttl)

    def get_json(self, key: str) -> Any:
        raw = self.client.get(key)
        return None if raw is None else json.loads(raw)

    def get(self, key: str) -> str | None:
        raw = self.client.get(key)
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else raw

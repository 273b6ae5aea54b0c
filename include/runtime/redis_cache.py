"""Redis writes and reads through the Airflow Redis connection, pipelined in chunks.

Failure model (DESIGN.md): the client itself retries a command or a pipeline chunk on a
connection error or timeout (`RETRIES` times, exponential backoff up to 2 s: a restart or
failover of a few seconds goes unnoticed; SET is idempotent, so a resent chunk is harmless).
A cache that still does not answer when a task first reaches it fails the run at once
(AirflowFailException naming the connection). A connection lost later, mid-write, is
raised as is: Airflow retries the task, and the retry overwrites the same keys.
"""
from __future__ import annotations

import json
import logging
from functools import cached_property
from typing import Any, Iterable, Iterator

from include.runtime.config import REDIS_CONN_ID

log = logging.getLogger(__name__)

RETRIES = 5  # client-side, over ~5 s: 0.2, 0.4, 0.8, 1.6, 2 s


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

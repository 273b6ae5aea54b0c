"""What every benchmark shares: real services in a database of its own, memory, the JSON line."""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

from include.runtime.services import Services, fresh_database, resolve


BENCH_REDIS_DB = 14


def keep_argument(parser: argparse.ArgumentParser) -> None:
    """--keep: leave the benchmark's database, Redis db and files behind (to inspect, or to reuse)."""
    parser.add_argument("--keep", action="store_true",
                        help=f"keep what the benchmark created (its PostgreSQL database, Redis db {BENCH_REDIS_DB}, "
                             "its temporary files); by default they are removed at exit")


def bench_services(name: str, fresh: bool = True, keep: bool = False) -> Services:
    """PostgreSQL (database `name`, created anew unless `fresh` is False) and Redis (db 14, flushed);
    connections exported. Unless `keep`, the database, the Redis db and the run's files are removed
    when the benchmark exits, however it exits."""
    import redis

    run_dir = Path(tempfile.mkdtemp(prefix=f"nightshift-{name}-"))
    os.environ.setdefault("AIRFLOW_HOME", str(run_dir / "airflow"))
    os.environ.setdefault("ARTIFACT_ROOT", (run_dir / "artifacts").as_uri())
    services = resolve(run_dir, use_local=True)
    services.postgres_url = (fresh_database(services.postgres_url, name) if fresh
                             else services.postgres_url.rsplit("/", 1)[0] + "/" + name)
    services.redis_url = services.redis_url.rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"
    redis.from_url(services.redis_url).flushdb()
    os.environ.update(services.airflow_env())
    say(f"services: postgres {services.origin['postgres']}, redis {services.origin['redis']}")
    if not keep:
        atexit.register(_remove, services, name, run_dir)
    return services


def _remove(services: Services, name: str, run_dir: Path) -> None:
    """What bench_services created; an embedded server already stopped took its data with it."""
    import psycopg
    import redis
    from psycopg import sql

    with contextlib.suppress(Exception):
        admin = services.postgres_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    with contextlib.suppress(Exception):
        redis.from_url(services.redis_url, socket_connect_timeout=5).flushdb()
    shutil.rmtree(run_dir, ignore_errors=True)
    say(f"removed database {name}, Redis db {BENCH_REDIS_DB} and {run_dir} (--keep keeps them)")


def load_synthetic_orders(**generate_args) -> int:
    """Generate synthetic orders (no events), load them into source_db, ANALYZE; order lines loaded."""
    import time

    from include.datasets.source_tables import load_source
    from include.datasets.synthetic import generate
    from include.runtime.database import Database
    from include.runtime.schema import migrate

    started = time.monotonic()
    data = generate(views_per_purchase=0, carts_per_purchase=0, **generate_args)
    with Database("source_db") as db:
        migrate(db)
        load_source(db, data.orders, data.products, data.customers)
        with db.conn.cursor() as cur:
            cur.execute("ANALYZE")
        db.conn.commit()
    say(f"data: {len(data.orders):,} order lines, {len(data.customers):,} customers, {len(data.products):,} "
        f"products loaded in {time.monotonic() - started:.0f}s")
    return len(data.orders)


def peak_memory_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """The last line of a benchmark: one JSON object with every figure measured."""
    print(json.dumps(result, default=str), flush=True)

"""A benchmark removes what it created (its database, its Redis db, its files) unless --keep."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SMALL = ["--products", "200", "--events", "2000", "--users", "100", "--repeats", "1", "--skip-pandas"]


def _databases(services) -> set[str]:
    import psycopg

    with psycopg.connect(services.postgres_url) as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database")}


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_a_benchmark_removes_its_database_unless_kept(services, keep):
    import psycopg

    out = subprocess.run([sys.executable, "-m", "bench.popularity", *SMALL, *(["--keep"] if keep else [])],
                         capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "NIGHTSHIFT_PG_URL": services.postgres_url,
                              "NIGHTSHIFT_REDIS_URL": services.redis_url})
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("nightshift_bench_popularity" in _databases(services)) is keep
    assert ("removed database nightshift_bench_popularity" in out.stderr) is not keep
    if keep:
        with psycopg.connect(services.postgres_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE nightshift_bench_popularity WITH (FORCE)")

"""scripts/load_data refuses to replace order data unless told twice, and checks before it reads.

A populated order schema stays byte-identical when `--replace` is missing or `--confirm` names
another database; the cheap checks (connection, server, input file) answer in one line before
any data is read.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from psycopg import sql

from include.datasets.source_tables import SOURCE_TABLES, load_source
from include.datasets.synthetic import generate
from scripts import load_data
from tests.conftest import ROOT

# a tiny synthetic set: seconds to generate and load
SMALL = ["--customers=60", "--products=25", "--start=2024-01-01", "--end=2024-03-31", "--seed=7", "--no-events"]


@pytest.fixture(scope="module")
def populated(database):
    data = generate(customers=40, products=20, start="2024-01-01", end="2024-02-26", seed=3,
                    views_per_purchase=0.5, carts_per_purchase=0.1)
    load_source(database, data.orders, data.products, data.customers, data.events)
    return database


def _digest(db) -> dict[str, tuple[int, str]]:
    """Per order table: rows and an md5 of every row's text, in a fixed order."""
    out = {}
    with db.conn.cursor() as cur:
        for table in SOURCE_TABLES:
            cur.execute(sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                                "FROM {} t").format(sql.Identifier(table)))
            out[table] = cur.fetchone()
    db.conn.commit()
    return out


def _dbname(db) -> str:
    with db.conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        name = cur.fetchone()[0]
    db.conn.commit()
    return name


@pytest.mark.parametrize("flags", [[], ["--confirm={name}"], ["--replace"], ["--replace", "--confirm=orders"],
                                   ["--replace", "--confirm={name}_other"]])
def test_refuses_without_replace_and_the_right_name(populated, capsys, flags):
    before = _digest(populated)
    assert before["OrderItem"][0] > 0 and before["events"][0] > 0
    name = _dbname(populated)
    with pytest.raises(SystemExit) as exit_:
        load_data.main(["synthetic", *SMALL, *(f.format(name=name) for f in flags)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"'{name}'" in err and f"--replace --confirm {name}" in err
    assert f"OrderItem {before['OrderItem'][0]}" in err and f"Client {before['Client'][0]}" in err
    assert _digest(populated) == before


def test_replace_with_the_right_name_lists_then_replaces(populated, capsys):
    before = _digest(populated)
    name = _dbname(populated)
    summary = load_data.main(["--replace", "--confirm", name, "synthetic", *SMALL])
    out = capsys.readouterr().out
    listing, loaded = out.split("{", 1)[0], out
    for table in SOURCE_TABLES:
        assert f"{table}: {before[table][0]} rows" in listing
    assert loaded.index("removing") < loaded.index('"written"')
    after = _digest(populated)
    assert after["Client"][0] == summary["written"]["Client"] == 60
    assert after["events"][0] == 0 and after["OrderItem"] != before["OrderItem"]


def test_flags_after_the_source_name_work_too(populated, capsys):
    name = _dbname(populated)
    summary = load_data.main(["synthetic", *SMALL, "--replace", f"--confirm={name}"])
    assert summary["written"]["Client"] == 60
    assert "Client: 60 rows" in capsys.readouterr().out


def _cli(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "scripts.load_data", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    return done, time.monotonic() - started


def test_missing_connection_is_one_line_before_the_file_is_read(services, tmp_path):
    huge = tmp_path / "huge.parquet"
    with open(huge, "wb") as f:  # 8 GB, sparse: reading it would take far longer than the check
        f.truncate(8 << 30)
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_CONN_SOURCE_DB"}
    for path in (str(huge), str(tmp_path / "missing.parquet")):
        done, seconds = _cli("online-retail", path, env=env)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("load_data: no Airflow connection 'source_db'") and "AIRFLOW_CONN_SOURCE_DB=" in last
        assert seconds < 60


def test_unreachable_server_and_missing_file_are_one_line(services, tmp_path):
    down = {**os.environ, "AIRFLOW_CONN_SOURCE_DB": "postgres://user:pass@127.0.0.1:1/orders"}
    done, _ = _cli("synthetic", *SMALL, env=down)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "127.0.0.1:1 does not answer" in done.stderr.strip().splitlines()[-1]

    done, _ = _cli("online-retail", str(tmp_path / "missing.parquet"), env=dict(os.environ))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("load_data: no input file at") and "missing.parquet" in last


def test_a_fresh_database_needs_no_flags(services):
    """What `make demo` does on a new server: no order tables yet, nothing to confirm."""
    import psycopg

    from include.runtime.services import fresh_database

    url = fresh_database(services.postgres_url, f"{services.postgres_url.rsplit('/', 1)[1]}_fresh")
    try:
        env = {**os.environ, "AIRFLOW_CONN_SOURCE_DB": url.replace("postgresql://", "postgres://", 1)}
        done, _ = _cli("synthetic", *SMALL, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "removing" not in done.stdout and '"Client": 60' in done.stdout
    finally:
        with psycopg.connect(services.postgres_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(url.rsplit("/", 1)[1])))

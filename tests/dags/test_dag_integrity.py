"""Every DAG file imports cleanly without secrets, follows the house rules, and parses fast."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.conftest import PARSE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY = {"pandas", "numpy", "statsmodels", "implicit", "faiss", "sklearn", "scipy", "lightgbm",
         "redis", "psycopg", "pymssql", "sentence_transformers", "torch"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag


def test_there_are_dags():
    assert DAG_FILES


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_follows_house_rules(dagbag, path):
    dag = dagbag.dags.get(path.stem)
    assert dag is not None, f"{path.name} must define a DAG with dag_id {path.stem!r}"
    assert dag.tags, "tags"
    assert dag.doc_md, "doc_md"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    for t in dag.tasks:
        assert t.owner and t.owner != "airflow", f"{t.task_id}: owner"
        assert t.retries >= 2, f"{t.task_id}: retries"


def test_the_demo_runs_every_dag(dagbag):
    """`make demo` runs the DAGs its JOBS table lists: a new DAG must be added there."""
    from scripts.demo import JOBS

    assert sorted(JOBS) == sorted(dagbag.dag_ids), "add the DAG to JOBS in scripts/demo.py, in dependency order"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_no_heavy_imports_at_top_level(path):
    tree = ast.parse(path.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & HEAVY, f"{path.name} imports {names & HEAVY} at top level; import them inside tasks"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_parses_alone_and_reports_its_parse_time(path, record_property):
    """The file's own import in a fresh interpreter once airflow.sdk is loaded, with no connections set.
    The time goes to the terminal summary (tests/dags/conftest.py), not asserted: timings are noisy."""
    code = ("import time, runpy, airflow.sdk; t = time.perf_counter(); "
            f"runpy.run_path({str(path)!r}); print(time.perf_counter() - t)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    seconds = float(out.stdout.strip().splitlines()[-1])
    record_property(PARSE_SECONDS, (path.name, seconds))

"""Every DAG file imports cleanly without secrets, follows the house rules, and parses fast."""
from __future__ import annotations

import ast
import datetime as dt
import os
import uuid
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.conftest import PARSE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
LONG_JOBS = {"cf_training", "faiss_rebuild"}  # one retry; every other DAG three
# waits for a job's DAG run, whose own tasks retry: a retry here would trigger the date again
NO_RETRY = {("backfill", "run_job")}
MINUTE = dt.timedelta(minutes=1)
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


def _fail(task, try_number: int, now: dt.datetime, cleared_after: int = 0):
    """One failed try of `task` through Airflow's own code: the API server's retry eligibility, the
    task runner's failure handling (which evaluates the retry policy), then the scheduler's
    next_retry_datetime. `cleared_after`: the task was cleared after that many tries (max_tries as
    clear_task_instances sets it). Returns (state, delay until the next try or None)."""
    import structlog
    from airflow.api_fastapi.execution_api.routes.task_instances import _is_eligible_to_retry
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance, _handle_current_task_failed

    run = DagRun(dag_id=task.dag_id, run_id="retry-test", logical_date=now, data_interval_start=now,
                 data_interval_end=now, run_after=now, start_date=now, end_date=None, run_type="manual",
                 state="running", consumed_asset_events=[], partition_key=None)
    max_tries = cleared_after + task.retries
    try_number += cleared_after
    server = TIRunContext(dag_run=run, max_tries=max_tries,
                          should_retry=_is_eligible_to_retry("running", try_number, max_tries))
    # built as task_runner.parse builds it (model_construct)
    runtime = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(), task_id=task.task_id, dag_id=task.dag_id, run_id=run.run_id, try_number=try_number,
        map_index=-1, dag_version_id=uuid.uuid4(), task=task, start_date=now, max_tries=max_tries,
        _ti_context_from_server=server)
    message, state = _handle_current_task_failed(runtime, ConnectionError("connection reset"), structlog.get_logger(),
                                                 {"task": task})
    if state != "up_for_retry":
        return state, None
    ti = TaskInstance(task=task, dag_version_id=None, run_id=run.run_id)
    ti.try_number, ti.end_date, ti.retry_delay_override = try_number, message.end_date, message.retry_delay_seconds
    return state, ti.next_retry_datetime() - message.end_date


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_retries_follow_the_failure_model(dagbag, path):
    """DESIGN: transient faults retry after 1, 5 and 15 minutes; the long model jobs retry once."""
    dag = dagbag.dags[path.stem]
    expected = [MINUTE] if dag.dag_id in LONG_JOBS else [MINUTE, 5 * MINUTE, 15 * MINUTE]
    now = dt.datetime.now(dt.timezone.utc)
    for t in dag.tasks:
        if (dag.dag_id, t.task_id) in NO_RETRY:
            assert t.retries == 0, f"{t.task_id}: retries"
            continue
        assert t.retries == len(expected), f"{t.task_id}: retries"
        schedule = [("up_for_retry", d) for d in expected] + [("failed", None)]
        assert [_fail(t, n, now) for n in range(1, len(expected) + 2)] == schedule, t.task_id
        assert [_fail(t, n, now, cleared_after=4) for n in range(1, len(expected) + 2)] == schedule, t.task_id


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_a_retry_the_policy_never_saw_stays_near_the_schedule(dagbag, path):
    """A task killed from outside (worker lost) is retried by the scheduler with the backoff
    settings alone: never sooner than the schedule, never more than twice it, at most 15 min."""
    from airflow.models.taskinstance import TaskInstance

    now = dt.datetime.now(dt.timezone.utc)
    for t in dagbag.dags[path.stem].tasks:
        ti = TaskInstance(task=t, dag_version_id=None, run_id="killed")
        for n, least in zip(range(1, t.retries + 1), (MINUTE, 5 * MINUTE, 15 * MINUTE)):
            ti.try_number, ti.end_date = n, now
            assert least <= ti.next_retry_datetime() - now < max(2 * least, 15 * MINUTE + dt.timedelta(seconds=1))


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

"""deploy/: the statsd-exporter mapping maps every metric name the project emits, and the Grafana
dashboard and alert rules parse and query only series that mapping produces.

The matcher below follows statsd_exporter's glob mode: `*` stands for one dot-free name
component, rules are tried in file order and the first match wins, `$n` / `${n}` in the name and
labels are the captured components.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from include.runtime.metrics import NAMES, PREFIX

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "deploy" / "statsd" / "mapping.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "nightshift.json"
ALERTS = ROOT / "deploy" / "grafana" / "provisioning" / "alerting" / "nightshift_alerts.json"
PROM_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def load_mapping(path: Path = MAPPING) -> list[tuple[re.Pattern, dict]]:
    rules = []
    for rule in yaml.safe_load(path.read_text())["mappings"]:
        pattern = "^" + r"\.".join("([^.]+)" if part == "*" else re.escape(part)
                                   for part in rule["match"].split(".")) + "$"
        rules.append((re.compile(pattern), rule))
    return rules


def _expand(template: str, groups: tuple[str, ...]) -> str:
    return re.sub(r"\$\{?(\d+)\}?", lambda m: groups[int(m.group(1)) - 1], template)


def map_name(mapping: list[tuple[re.Pattern, dict]], name: str) -> tuple[str, dict] | None:
    """(prometheus name, labels) of a StatsD name, None when no rule matches."""
    for pattern, rule in mapping:
        m = pattern.match(name)
        if m:
            labels = {k: _expand(v, m.groups()) for k, v in (rule.get("labels") or {}).items()}
            return _expand(rule["name"], m.groups()), labels
    return None


def _jobs() -> list[str]:
    return sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.stem.startswith("_"))


def _literal_names(kind: str) -> set[str]:
    """Check / quality names written as literals in include/jobs (f-string parts filled with `x`)."""
    found = set()
    for path in (ROOT / "include" / "jobs").glob("*.py"):
        for m in re.finditer(rf"metrics\.{kind}\([^,]+,\s*f?\"([^\"]+)\"", path.read_text()):
            found.add(re.sub(r"\{[^}]*\}", "x", m.group(1)))
    return found


def emitted_names() -> set[str]:
    """Every StatsD name the project sends, for every job DAG in dags/."""
    checks = _literal_names("check") | {"sample_check"}
    qualities = _literal_names("quality") | {"sample_metric", "customers_cached"}
    names = set()
    for job in _jobs():
        for key, template in NAMES.items():
            if key == "runs":
                names |= {template.format(job=job, status=s) for s in ("success", "failed")}
            elif key == "check":
                names |= {template.format(job=job, check=c, result=r) for c in checks for r in ("pass", "fail")}
            elif key == "quality":
                names |= {template.format(job=job, name=q) for q in qualities}
            elif key == "health":
                continue
            else:
                names.add(template.format(job=job))
    from scripts.health import HEALTH_CHECKS

    names |= {NAMES["health"].format(check=c) for c in HEALTH_CHECKS}
    return {PREFIX + n for n in names}


AIRFLOW_SAMPLES = {
    "airflow.dagrun.duration.success.weekly_recs": ("airflow_dagrun_duration_seconds",
                                                    {"status": "success", "dag_id": "weekly_recs"}),
    "airflow.dagrun.duration.failed.forecast_worker": ("airflow_dagrun_duration_seconds",
                                                       {"status": "failed", "dag_id": "forecast_worker"}),
    "airflow.dag.weekly_recs.process.duration": ("airflow_task_duration_seconds",
                                                 {"dag_id": "weekly_recs", "task_id": "process"}),
    "airflow.ti.finish.weekly_recs.publish.success": ("airflow_ti_finish_total",
                                                      {"dag_id": "weekly_recs", "task_id": "publish",
                                                       "status": "success"}),
    "airflow.pool.open_slots.source_db_slots": ("airflow_pool_open_slots", {"pool": "source_db_slots"}),
    "airflow.pool.queued_slots.default_pool": ("airflow_pool_queued_slots", {"pool": "default_pool"}),
    "airflow.executor.queued_tasks.LocalExecutor": ("airflow_executor_queued_tasks", {"executor": "LocalExecutor"}),
    "airflow.executor.running_tasks": ("airflow_executor_running_tasks", {}),
    "airflow.scheduler_heartbeat": ("airflow_scheduler_heartbeat_total", {}),
}


def test_every_emitted_name_maps_with_a_job_label():
    mapping = load_mapping()
    names = emitted_names()
    assert len(names) > 100
    unmapped = sorted(n for n in names if map_name(mapping, n) is None)
    assert not unmapped, unmapped
    for name in names:
        prom, labels = map_name(mapping, name)
        assert PROM_NAME.match(prom), (name, prom)
        assert prom.startswith("nightshift_")
        if ".health." not in name:
            job = name.split(".")[3]
            assert labels["job_name"] == job, (name, labels)
    assert map_name(mapping, "airflow.nightshift.job.weekly_recs.runs.failed") == (
        "nightshift_job_runs_total", {"job_name": "weekly_recs", "status": "failed"})
    assert map_name(mapping, "airflow.nightshift.dq.cf_training.promotion.pass") == (
        "nightshift_dq_checks_total", {"job_name": "cf_training", "check": "promotion", "result": "pass"})


@pytest.mark.parametrize("name", sorted(AIRFLOW_SAMPLES))
def test_airflow_metrics_map_with_dag_and_task_labels(name):
    assert map_name(load_mapping(), name) == AIRFLOW_SAMPLES[name]


def mapped_series() -> set[str]:
    """Prometheus series names the mapping can produce (histograms add _bucket/_sum/_count)."""
    mapping = load_mapping()
    series = set()
    for name in emitted_names() | set(AIRFLOW_SAMPLES) | {
            "airflow.pool.running_slots.x", "airflow.pool.starving_tasks.x", "airflow.pool.deferred_slots.x",
            "airflow.pool.scheduled_slots.x", "airflow.executor.open_slots.x", "airflow.executor.running_tasks.x",
            "airflow.dag_processing.import_errors"}:
        prom, _ = map_name(mapping, name)
        series |= {prom, f"{prom}_bucket", f"{prom}_sum", f"{prom}_count"}
    return series


def _queries(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [q for v in node.values() for q in _queries(v)]
    if isinstance(node, list):
        return [q for v in node for q in _queries(v)]
    return []


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:nightshift|airflow)_[a-z0-9_]+)\b", expr))


def test_dashboard_parses_and_queries_only_mapped_series():
    dashboard = json.loads(DASHBOARD.read_text())
    series = mapped_series()
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Job status", "Run duration", "Records processed", "Last success", "Failure rate",
            "Pool usage", "Executor queue"} <= titles, titles
    queries = _queries(dashboard["panels"])
    assert len(queries) >= 10
    for expr in queries:
        used = _metrics_in(expr)
        assert used, expr
        assert used <= series, (expr, used - series)


def test_alert_rules_parse_and_cover_the_seed_alerts():
    rules = json.loads(ALERTS.read_text())
    assert rules["apiVersion"] == 1
    flat = [rule for group in rules["groups"] for rule in group["rules"]]
    uids = {rule["uid"] for rule in flat}
    assert {"nightshift-job-failed", "nightshift-consecutive-failures", "nightshift-duration-2x",
            "nightshift-no-output", "nightshift-failure-rate", "nightshift-recs-coverage",
            "nightshift-week-key-missing", "nightshift-forecast-metadata-stale", "nightshift-deadline-missed"} <= uids
    series = mapped_series()
    for rule in flat:
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"]
        assert rule["condition"] in {d["refId"] for d in rule["data"]}
        prom_queries = [d["model"]["expr"] for d in rule["data"] if d["datasourceUid"] != "__expr__"]
        assert prom_queries, rule["uid"]
        for expr in prom_queries:
            assert _metrics_in(expr) and _metrics_in(expr) <= series, (rule["uid"], expr)

"""The DAG files' parse times in the terminal summary: `-ra` hides a passing test's output."""
from __future__ import annotations

PARSE_SECONDS = "parse_seconds"  # (file name, seconds), recorded by test_parses_alone_and_reports_its_parse_time


def pytest_terminal_summary(terminalreporter):
    times = [value for report in terminalreporter.stats.get("passed", [])
             for name, value in report.user_properties if name == PARSE_SECONDS]
    if not times:
        return
    terminalreporter.section("DAG parse times (fresh interpreter, airflow.sdk loaded)")
    for file_name, seconds in sorted(times, key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds * 1000:7.0f} ms  dags/{file_name}")

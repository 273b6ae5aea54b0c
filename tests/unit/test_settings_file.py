"""airflow_settings.yaml (what `astro dev start` loads) lists every setting with its default."""
from __future__ import annotations

from pathlib import Path

import yaml

from include.runtime.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]


def test_variables_are_the_settings_with_their_defaults():
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
    variables = {v["variable_name"]: v["variable_value"] for v in settings["variables"]}
    assert variables == {name: str(value) for name, value in DEFAULTS.items()}
    assert {c["conn_id"] for c in settings["connections"]} == {"source_db", "recs_db", "redis_default"}
    assert [p["pool_name"] for p in settings["pools"]] == ["source_db_slots"]

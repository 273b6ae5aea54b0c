"""Settings: an Airflow Variable (AIRFLOW_VAR_<NAME>), then the seeds' plain variable, then the seed default."""
from __future__ import annotations

import pytest

from include.runtime import config


def test_the_seed_default_without_a_variable(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_RECS_TOP_N", raising=False)
    monkeypatch.delenv("RECS_TOP_N", raising=False)
    assert config.get("RECS_TOP_N") == config.DEFAULTS["RECS_TOP_N"] == "25"


def test_the_environment_overrides_the_default(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_RECS_TOP_N", raising=False)
    monkeypatch.setenv("RECS_TOP_N", "40")
    assert config.get_int("RECS_TOP_N") == 40


def test_an_airflow_variable_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("RECS_TOP_N", "40")
    monkeypatch.setenv("AIRFLOW_VAR_RECS_TOP_N", "60")  # Airflow's environment secrets backend: no metadata DB
    assert config.get_int("RECS_TOP_N") == 60


def test_an_unknown_name_is_refused():
    with pytest.raises(KeyError, match="unknown setting 'RECS_TOPN'"):
        config.get("RECS_TOPN")

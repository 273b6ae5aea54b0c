"""Every Make target does what its name says: none is a silent no-op."""
from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT


def test_every_phony_target_runs_a_command():
    text = (ROOT / "Makefile").read_text()
    targets = re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split()
    assert {"demo", "test"} <= set(targets)
    for target in targets:
        # -n prints what would run without running it; -B so an up-to-date venv still shows its recipe
        dry = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"
        assert dry.stdout.strip() and "Nothing to be done" not in dry.stdout, f"make {target} does nothing"

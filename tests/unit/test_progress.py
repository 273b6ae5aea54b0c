"""Progress lines every N items (processed/total, percent, ok, failed, rate, ETA) and the run summary."""
from __future__ import annotations

import logging

from include.runtime.progress import Progress, log_summary


class _Clock:
    """Seconds set by the test, so rate and ETA have known values."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_logs_every_n_items_and_at_the_total(caplog):
    caplog.set_level(logging.INFO, logger="include.runtime.progress")
    clock = _Clock()
    progress = Progress("shards", total=10, every=4, clock=clock)
    clock.now = 1.0
    progress.update(succeeded=3)  # 3 < 4: no line yet
    clock.now = 2.0
    progress.update(succeeded=1, failed=1)  # 5 items in 2 s: 2.5/s, 5 left
    clock.now = 3.0
    progress.update(succeeded=2)  # 7 < 8: the next line is due at 8
    clock.now = 4.0
    progress.update(succeeded=3)  # the total: a last line however many since the previous one
    assert caplog.messages == [
        "shards: 5/10 (50.0%) ok=4 failed=1 rate=2.5/s eta=2s",
        "shards: 10/10 (100.0%) ok=9 failed=1 rate=2.5/s eta=0s",
    ]
    assert (progress.processed, progress.elapsed) == (10, 4.0)


def test_a_batch_past_several_marks_logs_once(caplog):
    caplog.set_level(logging.INFO, logger="include.runtime.progress")
    clock = _Clock()
    progress = Progress("users", total=100, every=10, clock=clock)
    clock.now = 5.0
    progress.update(succeeded=25)
    progress.update(succeeded=4)  # 29: still before the next mark, 30
    assert caplog.messages == ["users: 25/100 (25.0%) ok=25 failed=0 rate=5.0/s eta=15s"]


def test_run_summary_aligns_names_and_logs_it(caplog):
    caplog.set_level(logging.INFO, logger="include.runtime.progress")
    text = log_summary("weekly_recs run", {"users": 120, "failed": 3, "seconds": 4.2})
    assert text == "weekly_recs run\n  users   : 120\n  failed  : 3\n  seconds : 4.2"
    assert caplog.messages == [text]

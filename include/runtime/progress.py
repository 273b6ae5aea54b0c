"""Progress lines for long work and the summary at the end of a run, in the task log."""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

log = logging.getLogger(__name__)


class Progress:
    """Logs processed/total, percent, successes, failures, rate and ETA every `every` items."""

    def __init__(self, label: str, total: int, every: int = 1000, logger: logging.Logger = log,
                 clock=time.monotonic) -> None:
        self.label, self.total, self.every, self.logger, self.clock = label, total, max(1, every), logger, clock
        self.started = clock()
        self.succeeded = self.failed = 0
        self._next = self.every

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    def update(self, succeeded: int = 0, failed: int = 0) -> None:
        self.succeeded += succeeded
        self.failed += failed
        if self.processed >= self._next or self.processed >= self.total:
            self._next = (self.processed // self.every + 1) * self.every
            self.logger.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.processed / elapsed
        left = max(self.total - self.processed, 0)
        eta = left / rate if rate > 0 else float("inf")
        percent = 100.0 * self.processed / self.total if self.total else 100.0
        return (f"{self.label}: {self.processed}/{self.total} ({percent:.1f}%) ok={self.succeeded} "
                f"failed={self.failed} rate={rate:.1f}/s eta={eta:.0f}s")

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started


def log_summary(title: str, stats: Mapping[str, Any], logger: logging.Logger = log) -> str:
    """Log a run summary as aligned `name: value` lines; returns the text."""
    width = max((len(k) for k in stats), default=0)
    body = "\n".join(f"  {k.ljust(width)} : {v}" for k, v in stats.items())
    text = f"{title}\n{body}"
    logger.info("%s", text)
    return text

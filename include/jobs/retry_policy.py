"""The retry schedule of DESIGN's failure model: a transient fault is retried after 1, 5 and 15
minutes (the long model jobs get one retry).

Airflow's exponential backoff cannot give 1, 5, 15: it adds a per-try jitter of up to one more
delay (next_retry_datetime). A RetryPolicy returns the exact delay for each try instead. It runs in
the worker, which re-parses the DAG file, so the scheduler only stores a has_retry_policy flag and
the class needs no serializer. AirflowFailException never reaches a policy: it fails at once.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy

RETRY_DELAYS = (dt.timedelta(minutes=1), dt.timedelta(minutes=5), dt.timedelta(minutes=15))


class ScheduledRetryPolicy(RetryPolicy):
    """Retry after `delays[n - 1]` when try n failed (the last delay for any later try). n counts
    from the last clear: clearing sets max_tries to try_number + retries. How many retries stays
    the task's `retries`."""

    def __init__(self, delays: Sequence[dt.timedelta] = RETRY_DELAYS) -> None:
        if not delays or any(d <= dt.timedelta(0) for d in delays):
            raise ValueError(f"retry delays must be a non-empty list of positive durations, got {list(delays)}")
        self.delays = tuple(delays)

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context=None) -> RetryDecision:
        if try_number > max_tries:  # no retry left: the task fails the standard way
            return RetryDecision.default()
        retries = context["task"].retries if context else max_tries
        attempt = retries - (max_tries - try_number)
        delay = self.delays[min(max(attempt, 1), len(self.delays)) - 1]
        return RetryDecision.retry(delay, f"try {attempt} failed with {type(exception).__name__}; "
                                          f"retrying in {delay.total_seconds() / 60:g} min")

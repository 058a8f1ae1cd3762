"""Prometheus series a Celery worker serves on its own port, from its own memory.

The web's /metrics reports the whole service from PostgreSQL and Redis, a couple of
seconds behind and only while Redis answers. A worker's own port answers from the
live objects of that one process, even when Redis is away, and adds what only the
worker sees: how long its tasks take and how Kite answered its historical requests.
Its series carry a `ticker_worker_` or `ticker_backfill_` prefix, so a Prometheus
scraping both the web and the workers never sums one figure twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ticker.accounts import Account
from ticker.config import Settings
from ticker.metrics import worker_series

log = logging.getLogger(__name__)

# Seconds: a subscribe takes a few ms to 1 s (Kite's confirmation window); a
# backfill up to tens of seconds while it waits for its turn at Kite.
TASK_SECONDS_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

TASK_SECONDS = Histogram(
    "ticker_worker_task_duration_seconds",
    "Seconds a task ran on this worker, from start to finish.",
    ["task"],
    buckets=TASK_SECONDS_BUCKETS,
)
TASKS = Counter(
    "ticker_worker_tasks", "Tasks this worker finished, by outcome.", ["task", "state"]
)
# `code` is Kite's HTTP status ("200", "429", ...) or "network" when none came.
HISTORICAL_REQUESTS = Counter(
    "ticker_backfill_historical_requests",
    "Historical-candle requests this process sent to Kite, by answer.",
    ["code"],
)

def worker_metrics_port(
    settings: Settings, accounts: Iterable[Account], account_id: str | None
) -> int | None:
    """The port of one worker's metrics, or None when workers serve none.

    The backfill worker (no account) takes the base port, and the n-th account of
    the accounts file the base plus 1 + n, so every worker of one host differs and
    the runner and the workers agree without being told.
    """
    base = settings.worker_metrics_port
    if base == 0:
        return None
    if account_id is None:
        return base
    ids = [account.id for account in accounts]
    return base + 1 + ids.index(account_id)


class AccountWorkerCollector(Collector):
    """An account worker's sockets and tick path, read at each scrape."""

    def __init__(self, state: Callable[[], dict[str, Any] | None]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        if state is None:
            return  # not started yet, or stopping
        yield from worker_series([state], "ticker_worker_")

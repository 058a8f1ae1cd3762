"""A worker bootstep serving the worker's own Prometheus series on its own port.

The port comes from `TICKER_WORKER_METRICS_PORT` (see `worker_metrics_port`); 0
serves nothing. Task durations are timed from Celery's prerun/postrun signals,
which fire on the thread running the task.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from celery import bootsteps, signals
from prometheus_client import REGISTRY, start_http_server

from tasks.socket_step import WORKER_ACCOUNT_ENV, current_worker
from ticker.accounts import Account, load_accounts
from ticker.config import Settings
from ticker.worker_metrics import (
    TASK_SECONDS,
    TASKS,
    AccountWorkerCollector,
    worker_metrics_port,
)

log = logging.getLogger(__name__)

# Task id -> monotonic start. Entries live between prerun and postrun only.
_started: dict[str, float] = {}


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.monotonic()


@signals.task_postrun.connect
def _task_finished(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    started = _started.pop(task_id, None) if task_id is not None else None
    name = getattr(task, "name", None) or "unknown"
    if started is not None:
        TASK_SECONDS.labels(task=name).observe(time.monotonic() - started)
    TASKS.labels(task=name, state=state or "unknown").inc()


def _account_state() -> dict[str, Any] | None:
    worker = current_worker()
    return None if worker is None else worker.state()


class WorkerMetricsStep(bootsteps.StartStopStep):
    """Serves /metrics of this worker process while the worker runs."""

    def __init__(self, parent, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(parent, **kwargs)
        self.server: Any = None
        self.collector: AccountWorkerCollector | None = None

    def start(self, parent):  # type: ignore[no-untyped-def]
        settings = Settings()
        account_id = os.environ.get(WORKER_ACCOUNT_ENV) or None
        accounts: Iterable[Account] = (
            load_accounts(settings.accounts_file) if account_id else []
        )
        port = worker_metrics_port(settings, accounts, account_id)
        if port is None:
            return
        if account_id is not None:
            self.collector = AccountWorkerCollector(_account_state)
            REGISTRY.register(self.collector)
        try:
            self.server, _ = start_http_server(port, addr=settings.worker_metrics_host)
        except OSError as exc:
            # The worker's real job goes on without its metrics.
            log.error(
                "worker metrics not served account=%s address=%s:%d: %s",
                account_id,
                settings.worker_metrics_host,
                port,
                exc,
            )
            return
        log.info(
            "worker metrics served account=%s url=http://%s:%d/metrics",
            account_id,
            settings.worker_metrics_host,
            port,
        )

    def stop(self, parent):  # type: ignore[no-untyped-def]
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.collector is not None:
            REGISTRY.unregister(self.collector)
            self.collector = None

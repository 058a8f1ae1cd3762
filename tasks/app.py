"""The Celery application shared by the web (to send) and the workers (to run)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from ticker.config import Settings
from ticker.logs import configure_logging

log = logging.getLogger(__name__)

app = Celery("ticker", include=["tasks.subscriptions", "tasks.backfill"])
app.config_from_object("celeryconfig")


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """Workers and beat log in the service's format (JSON too), not Celery's.

    Answering this signal stops Celery from hijacking the root logger with its own
    handler; the level is the same TICKER_LOG_LEVEL `--loglevel` was given.
    """
    configure_logging(Settings())


@signals.celeryd_after_setup.connect
def _banner_as_a_record(sender: str, instance: Any, **_: Any) -> None:
    """In JSON logs the worker's multi-line banner becomes one record."""
    if Settings().log_format == "json":
        instance.quiet = True
        log.info("celery worker starting hostname=%s concurrency=%s",
                 sender, instance.concurrency)


from tasks.backfill_presence_step import BackfillPresenceStep
from tasks.metrics_step import WorkerMetricsStep  # noqa: E402 (needs `app`'s module loaded)
from tasks.socket_step import AccountSocketStep  # noqa: E402

app.steps["worker"].add(AccountSocketStep)
app.steps["worker"].add(WorkerMetricsStep)
app.steps["worker"].add(BackfillPresenceStep)

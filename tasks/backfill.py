"""Backfill tasks, run by the backfill worker on its own queue, never by an account's.

`ticker.backfill` is linked to each new subscription's subscribe task, so Flower shows
the two as one flow; `ticker.backfill_gaps` is beat's periodic job.
"""

from __future__ import annotations

import logging
import random
import threading

import redis
from celery import Task

from tasks.app import app
from tasks.once import RunsOnce
from ticker import backfill_presence
from ticker.access_tokens import access_token_or_file
from ticker.accounts import load_accounts
from ticker.backfill_runner import BackfillRunner
from ticker.config import Settings
from ticker.events import EventPublisher
from ticker.historical import HistoricalPacer, HistoricalRefused, HistoricalUnavailable
from ticker.storage.pool import make_pool

log = logging.getLogger(__name__)

BACKFILL_MAX_RETRIES = 8
RETRY_BACKOFF_MAX_S = 60

_runner: BackfillRunner | None = None
_runner_lock = threading.Lock()


def runner() -> BackfillRunner:
    """This process's runner, built on first use (never at import)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            settings = Settings()
            client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
            _runner = BackfillRunner(
                accounts=load_accounts(settings.accounts_file),
                pool=make_pool(settings.database_url, "backfill", max_size=4),
                pacer=HistoricalPacer(
                    client,
                    settings.key_prefix,
                    settings.historical_requests_per_window,
                    settings.historical_window_s,
                ),
                events=EventPublisher.from_settings(client, settings),
                rest_root=settings.kite_rest_root,
                trading_days=settings.backfill_trading_days,
                access_token_of=lambda account: access_token_or_file(
                    client, settings.key_prefix, account),
            )
        return _runner


@app.task(name="ticker.backfill", base=RunsOnce, bind=True,
          max_retries=BACKFILL_MAX_RETRIES)
def backfill(self: Task, instrument_token: int, interval: str | None = None) -> None:
    """Fetch and store the token's missing candles; retried while Kite is busy."""
    interval = interval or Settings().backfill_interval
    log.info("backfill token=%s interval=%s task=%s try=%d",
             instrument_token, interval, self.request.id, self.request.retries + 1)
    try:
        runner().run(instrument_token, interval)
    except HistoricalRefused as exc:
        runner().report_failure(instrument_token, interval, str(exc))
    except HistoricalUnavailable as exc:
        if self.request.retries >= self.max_retries:
            runner().report_failure(
                instrument_token, interval, f"gave up after {self.max_retries} retries: {exc}"
            )
            return
        # Exponential backoff with jitter, so many busy backfills spread out.
        countdown = min(2 ** self.request.retries, RETRY_BACKOFF_MAX_S) + random.random()
        log.warning("backfill retry token=%s in=%.1fs: %s", instrument_token, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown) from exc


@app.task(name="ticker.backfill_many", base=RunsOnce)
def backfill_many(instrument_tokens: list[int]) -> int:
    """Queue a backfill for each token of a batch subscribe, from the backfill worker.

    Linked once to a batch's subscribe task, so the account's socket worker sends
    one message instead of one a token; the fan-out happens here, off its thread.
    """
    for token in instrument_tokens:
        backfill.delay(token)
    log.info("batch backfill queued tokens=%d", len(instrument_tokens))
    return len(instrument_tokens)


@app.task(name="ticker.backfill_gaps", base=RunsOnce)
def backfill_gaps() -> int:
    """Queue a gap fill for every active subscription; the pacer spreads the fetches."""
    tokens = runner().active_tokens()
    for token in tokens:
        backfill.delay(token)
    settings = Settings()
    try:
        with redis.Redis.from_url(settings.redis_url, socket_timeout=5) as client:
            backfill_presence.record_gap_fill(client, settings.key_prefix, len(tokens))
    except redis.RedisError as exc:
        # The backfills are queued; only /health's "last gap fill" stays behind.
        log.warning("gap fill not recorded for /health: %s", exc)
    log.info("gap fill queued subscriptions=%d", len(tokens))
    return len(tokens)

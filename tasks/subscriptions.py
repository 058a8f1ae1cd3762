"""Tasks that apply subscription changes on an account's sockets.

Each is sent to its account's own queue, so only that account's worker runs it. Tasks
carry ids and modes, never credentials: workers read those themselves. Both tasks are
idempotent (a redelivered one finds its change applied and announces nothing).
"""

from __future__ import annotations

import logging

import psycopg
import redis
from celery import Task
from psycopg_pool import PoolTimeout

from tasks.app import app
from tasks.once import RunsOnce
from tasks.socket_step import current_worker
from ticker.account_worker import AccountWorker
from ticker.errors import SocketUnavailable
from ticker.subscriptions import Mode

log = logging.getLogger(__name__)

SOCKET_RETRY_COUNTDOWN_S = 2
SOCKET_RETRY_MAX = 30
# The socket or a store is away for a moment: the change is kept and tried again
# (both tasks are idempotent, so a second try after a half-done first is harmless).
TRANSIENT = (SocketUnavailable, psycopg.OperationalError, PoolTimeout, redis.RedisError)


def _worker_for(account_id: str) -> AccountWorker:
    worker = current_worker()
    if worker is None or worker.account.id != account_id:
        # Raised, not swallowed: with late acks the message goes back to the queue
        # for the right worker instead of being lost.
        raise RuntimeError(
            f"task for account {account_id!r} reached a worker that does not hold "
            f"it ({worker.account.id if worker else 'none'}); check the queue routing"
        )
    return worker


@app.task(name="ticker.subscribe", base=RunsOnce, bind=True,
          max_retries=SOCKET_RETRY_MAX)
def subscribe(self: Task, account_id: str, instrument_token: int, mode: str,
              version: int) -> None:
    """Put an instrument on the account's socket in `mode` (or change its mode)."""
    log.info("subscribe account=%s token=%s mode=%s task=%s",
             account_id, instrument_token, mode, self.request.id,
             extra={"event": "subscribe"})
    try:
        _worker_for(account_id).apply_subscribe(instrument_token, Mode(mode), version)
    except TRANSIENT as exc:
        log.warning("subscribe retry account=%s token=%s: %s", account_id, instrument_token,
                    exc)
        raise self.retry(exc=exc, countdown=SOCKET_RETRY_COUNTDOWN_S) from exc


@app.task(name="ticker.subscribe_batch", base=RunsOnce, bind=True,
          max_retries=SOCKET_RETRY_MAX)
def subscribe_batch(self: Task, account_id: str, changes: list[list[object]]) -> None:
    """Put a batch of instruments on the account's socket: `[[token, mode, version]]`."""
    log.info("subscribe batch account=%s tokens=%d task=%s",
             account_id, len(changes), self.request.id,
             extra={"event": "subscribe_batch"})
    parsed = [(int(token), Mode(mode), int(version))  # type: ignore[call-overload]
              for token, mode, version in changes]
    try:
        refused = _worker_for(account_id).apply_subscribe_many(parsed)
    except TRANSIENT as exc:
        log.warning("subscribe batch retry account=%s tokens=%d: %s", account_id,
                    len(changes), exc)
        raise self.retry(exc=exc, countdown=SOCKET_RETRY_COUNTDOWN_S) from exc
    if refused:
        log.warning("subscribe batch refused by Kite account=%s tokens=%s task=%s",
                    account_id, refused, self.request.id)


@app.task(name="ticker.unsubscribe", base=RunsOnce, bind=True,
          max_retries=SOCKET_RETRY_MAX)
def unsubscribe(self: Task, account_id: str, instrument_token: int, version: int) -> None:
    """Take an instrument off the account's socket."""
    log.info("unsubscribe account=%s token=%s task=%s",
             account_id, instrument_token, self.request.id,
             extra={"event": "unsubscribe"})
    try:
        _worker_for(account_id).apply_unsubscribe(instrument_token, version)
    except TRANSIENT as exc:
        log.warning("unsubscribe retry account=%s token=%s: %s", account_id,
                    instrument_token, exc)
        raise self.retry(exc=exc, countdown=SOCKET_RETRY_COUNTDOWN_S) from exc

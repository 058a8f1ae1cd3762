"""A worker bootstep that holds one account's sockets for the worker's whole life.

It lives in a Worker step, not a Consumer step: consumer steps restart on every broker
reconnect, and a broker hiccup must not drop Kite sockets (KITE-NOTES §5). Tasks run
on a thread of this same process (`--pool threads`), so they reach the sockets.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import redis
from celery import bootsteps
from psycopg_pool import ConnectionPool

from tasks.sender import CeleryTaskSender
from ticker.account_worker import AccountWorker
from ticker.accounts import load_accounts
from ticker.config import Settings
from ticker.storage.migrations import apply_migrations
from ticker.storage.pool import make_pool

log = logging.getLogger(__name__)

# The official client logs every close, even a clean one it asked for, at ERROR and
# without the account; the socket holder logs each with its context instead.
logging.getLogger("kiteconnect.ticker").setLevel(logging.CRITICAL)

WORKER_ACCOUNT_ENV = "TICKER_WORKER_ACCOUNT"

_current: AccountWorker | None = None


def current_worker() -> AccountWorker | None:
    """The account worker of this process, or None outside an account worker."""
    return _current


class AccountSocketStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(parent, **kwargs)
        self.account_worker: AccountWorker | None = None
        self.pool: ConnectionPool | None = None

    def start(self, parent):  # type: ignore[no-untyped-def]
        global _current
        account_id = os.environ.get(WORKER_ACCOUNT_ENV)
        if not account_id:
            return  # a worker of another kind (backfill, tests)
        settings = Settings()
        accounts = load_accounts(settings.accounts_file)
        account = accounts.get(account_id)
        apply_migrations(settings.database_url)
        self.pool = make_pool(settings.database_url, f"worker-{account_id}", max_size=4)
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        sender = CeleryTaskSender(parent.app, settings)
        self.account_worker = AccountWorker(
            settings, account, self.pool, client, owner, sender, accounts
        )
        self.account_worker.start()
        _current = self.account_worker

    def stop(self, parent):  # type: ignore[no-untyped-def]
        global _current
        if self.account_worker is not None:
            _current = None
            self.account_worker.stop()
            self.account_worker = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None

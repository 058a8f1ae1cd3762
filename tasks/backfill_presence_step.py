"""A worker bootstep by which a backfill worker tells /health it runs.

Active only in a worker that consumes the backfill queue. A thread renews the
worker's entry every heartbeat; a Redis outage only skips renewals, and the first
one after it puts the entry back (a Redis restarted empty keeps nothing).
"""

from __future__ import annotations

import logging
import threading

import redis
from celery import bootsteps

from ticker import backfill_presence
from ticker.config import Settings

log = logging.getLogger(__name__)

# Missing this many heartbeats in a row makes /health count the worker gone.
LAPSE_HEARTBEATS = 3


class BackfillPresenceStep(bootsteps.StartStopStep):
    def __init__(self, parent, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(parent, **kwargs)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.client: redis.Redis | None = None
        self.name = ""
        self.settings: Settings | None = None

    def start(self, parent):  # type: ignore[no-untyped-def]
        settings = Settings()
        if settings.backfill_queue not in parent.app.amqp.queues.consume_from:
            return  # an account's worker, or another kind
        self.settings = settings
        self.name = parent.hostname
        self.client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self.stopping.clear()
        self.thread = threading.Thread(
            target=self._renew_forever, name="backfill-presence", daemon=True
        )
        self.thread.start()
        log.info("backfill worker announced worker=%s", self.name)

    def _renew_forever(self) -> None:
        assert self.settings is not None and self.client is not None
        every_s = self.settings.worker_heartbeat_s
        while True:
            try:
                backfill_presence.announce(self.client, self.settings.key_prefix,
                                           self.name, every_s * LAPSE_HEARTBEATS)
            except redis.RedisError as exc:
                log.warning("backfill presence not renewed worker=%s: %s", self.name, exc)
            if self.stopping.wait(every_s):
                return

    def stop(self, parent):  # type: ignore[no-untyped-def]
        if self.thread is None:
            return
        self.stopping.set()
        self.thread.join(timeout=5)
        self.thread = None
        assert self.settings is not None and self.client is not None
        try:
            backfill_presence.withdraw(self.client, self.settings.key_prefix, self.name)
        except redis.RedisError as exc:
            log.warning("backfill presence not withdrawn worker=%s: %s", self.name, exc)
        self.client.close()
        log.info("backfill worker withdrawn worker=%s", self.name)

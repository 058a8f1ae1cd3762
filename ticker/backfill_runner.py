"""Fetches and stores a subscription's missing candles, then announces the outcome.

What is missing is read from the candles table itself: everything after the last
stored candle, or the whole lookback when there is none. So a first backfill, a retry
after a partial failure and beat's periodic gap fill are one and the same operation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from psycopg_pool import ConnectionPool

from ticker.accounts import Account, Accounts
from ticker.backfill import complete_until, gap_start, is_derivative, split_span
from ticker.events import (
    BACKFILL_COMPLETED,
    BACKFILL_FAILED,
    EventPublisher,
    backfill_event,
)
from ticker.historical import HistoricalPacer, KiteHistorical
from ticker.storage import candles as candle_store
from ticker.storage import outbox
from ticker.storage import subscriptions as subscription_store
from ticker.subscriptions import Status, Subscription
from ticker.ticks import IST

log = logging.getLogger(__name__)


class BackfillRunner:
    def __init__(
        self,
        accounts: Accounts,
        pool: ConnectionPool,
        pacer: HistoricalPacer,
        events: EventPublisher,
        rest_root: str,
        trading_days: int,
        access_token_of: Callable[[Account], str] = Account.resolve_access_token,
    ) -> None:
        self._accounts = accounts
        self._access_token_of = access_token_of
        self._pool = pool
        self._pacer = pacer
        self._events = events
        self._rest_root = rest_root
        self._trading_days = trading_days

    def run(self, instrument_token: int, interval: str, now: datetime | None = None
            ) -> dict[str, Any] | None:
        """Fill the token's gap up to `now`; None when it is no longer subscribed.

        Raises HistoricalUnavailable (retry later) or HistoricalRefused (give up).
        """
        now = now or datetime.now(IST)
        subscription = self._subscription(instrument_token)
        if subscription is None:
            log.info("backfill skipped, not subscribed token=%s", instrument_token)
            return None
        with self._pool.connection() as conn:
            last = candle_store.last_start(conn, instrument_token, interval)
        start = gap_start(last, now, interval, self._trading_days)
        end = complete_until(now, interval)
        account = self._accounts.get(subscription.account_id)
        client = KiteHistorical(account, self._rest_root, self._pacer,
                                self._access_token_of(account))
        received = stored = 0
        for span in split_span(start, end, interval):
            candles = client.fetch(
                instrument_token, interval, span, oi=is_derivative(subscription.exchange)
            )
            with self._pool.connection() as conn:
                inserted, _ = candle_store.upsert(conn, candles)
            received += len(candles)
            stored += inserted
        details = {
            "interval": interval,
            # Nothing finished since the last stored candle: an empty span at its end.
            "from": min(start, end + timedelta(seconds=1)).astimezone(IST).isoformat(),
            "to": end.astimezone(IST).isoformat(),
            "candles_received": received,
            "candles_stored": stored,
        }
        self._announce(subscription, backfill_event(BACKFILL_COMPLETED, subscription, details))
        log.info("backfill done token=%s account=%s interval=%s stored=%d received=%d",
                 instrument_token, subscription.account_id, interval, stored, received,
                 extra={"event": "backfill_done"})
        return details

    def report_failure(self, instrument_token: int, interval: str, reason: str) -> None:
        """Announce a backfill that will not be retried; the subscription is untouched."""
        subscription = self._subscription(instrument_token)
        log.warning("backfill failed token=%s interval=%s: %s",
                    instrument_token, interval, reason)
        if subscription is not None:
            self._announce(subscription, backfill_event(
                BACKFILL_FAILED, subscription, {"interval": interval, "reason": reason}
            ))

    def _announce(self, subscription: Subscription, event: dict[str, Any]) -> None:
        """Through the account's outbox, numbered and ordered with its other events."""
        with self._pool.connection() as conn:
            subscription_store.queue_event(conn, subscription, event)
            try:
                outbox.flush(conn, subscription.account_id, self._events.publish)
            except redis.RedisError as exc:
                # Stored: the account worker's next outbox flush sends it.
                log.warning("backfill event left in the outbox token=%s account=%s: %s",
                            subscription.instrument_token, subscription.account_id, exc)

    def _subscription(self, instrument_token: int) -> Subscription | None:
        with self._pool.connection() as conn:
            subscription = subscription_store.get(conn, instrument_token)
        if subscription is None or subscription.status is Status.REMOVED:
            return None
        return subscription

    def active_tokens(self) -> list[int]:
        with self._pool.connection() as conn:
            return [
                s.instrument_token
                for s in subscription_store.list_subscriptions(conn, status=Status.ACTIVE)
            ]

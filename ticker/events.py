"""Subscription lifecycle events, as back ends receive them on the events channel."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis

from ticker.subscriptions import Mode, Subscription

log = logging.getLogger(__name__)

SUBSCRIPTION_CREATED = "subscription_created"
SUBSCRIPTION_UPDATED = "subscription_updated"
SUBSCRIPTION_REMOVED = "subscription_removed"
SUBSCRIPTION_MOVED = "subscription_moved"
BACKFILL_COMPLETED = "backfill_completed"
BACKFILL_FAILED = "backfill_failed"


def lifecycle_event(
    subscription: Subscription, before: Mode | None, after: Mode | None
) -> dict[str, Any] | None:
    """The event a socket change from mode `before` to `after` announces, if any.

    None to a mode is a creation (a move when the subscription came from another
    account), a mode to None a removal, one mode to another an update; no change
    announces nothing, which keeps redelivered tasks silent.
    """
    if before == after:
        return None
    if before is None and subscription.moved_from:
        event_type, mode = SUBSCRIPTION_MOVED, after
    elif before is None:
        event_type, mode = SUBSCRIPTION_CREATED, after
    elif after is None:
        event_type, mode = SUBSCRIPTION_REMOVED, before
    else:
        event_type, mode = SUBSCRIPTION_UPDATED, after
    assert mode is not None
    metadata: dict[str, Any] = {
        "tradingsymbol": subscription.tradingsymbol,
        "segment": subscription.segment,
        "requested_mode": mode.label,
        "account_id": subscription.account_id,
    }
    if event_type == SUBSCRIPTION_UPDATED:
        metadata["previous_mode"] = before.label  # type: ignore[union-attr]
    if event_type == SUBSCRIPTION_MOVED:
        metadata["previous_account_id"] = subscription.moved_from
    return {
        "event_type": event_type,
        "instrument_token": subscription.instrument_token,
        "metadata": metadata,
        "timestamp": round(time.time(), 3),
    }


def backfill_event(
    event_type: str, subscription: Subscription, details: dict[str, Any]
) -> dict[str, Any]:
    """A backfill outcome, in the same envelope as the subscription events."""
    return {
        "event_type": event_type,
        "instrument_token": subscription.instrument_token,
        "metadata": {
            "tradingsymbol": subscription.tradingsymbol,
            "segment": subscription.segment,
            "account_id": subscription.account_id,
            **details,
        },
        "timestamp": round(time.time(), 3),
    }


class EventPublisher:
    """Publishes events as JSON on one Redis pub/sub channel."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self._client = client
        self._channel = channel

    def publish(self, event: dict[str, Any]) -> None:
        listeners = self._client.publish(self._channel, orjson.dumps(event))
        log.info(
            "event published type=%s token=%s account=%s listeners=%d",
            event["event_type"],
            event["instrument_token"],
            event["metadata"]["account_id"],
            listeners,
        )

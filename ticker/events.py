"""Subscription lifecycle events, as back ends receive them on the events channel."""

from __future__ import annotations

import logging
import time
import uuid
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

# How long a published event's id is remembered, so that a flush repeated after a
# crash does not publish it again: far longer than any worker takes to come back.
PUBLISHED_MARKER_TTL_S = 7 * 24 * 3600

# Publish an event only if its id was never published: claiming the marker and
# publishing happen in one script, which Redis runs atomically, so a worker that
# dies after its publish but before it deletes the outbox row cannot announce the
# change a second time when its outbox is flushed again.
_PUBLISH_ONCE = """
if redis.call('set', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  return redis.call('publish', ARGV[1], ARGV[2])
end
return -1
"""


def new_event_id() -> str:
    return uuid.uuid4().hex


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
        "event_id": new_event_id(),
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
        "event_id": new_event_id(),
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
    """Publishes events as JSON on one Redis pub/sub channel, each id at most once."""

    def __init__(self, client: redis.Redis, channel: str, key_prefix: str) -> None:
        self._client = client
        self._channel = channel
        self._marker_prefix = f"{key_prefix}event-published:"
        self._publish_once = client.register_script(_PUBLISH_ONCE)

    def publish(self, event: dict[str, Any]) -> None:
        """Publish `event` unless its `event_id` was published before."""
        listeners = self._publish_once(
            keys=[self._marker_prefix + event["event_id"]],
            args=[self._channel, orjson.dumps(event), PUBLISHED_MARKER_TTL_S],
        )
        if listeners < 0:
            log.warning(
                "event already published, not sent again id=%s type=%s token=%s",
                event["event_id"], event["event_type"], event["instrument_token"],
            )
            return
        log.info(
            "event published id=%s type=%s token=%s account=%s listeners=%d",
            event["event_id"],
            event["event_type"],
            event["instrument_token"],
            event["metadata"]["account_id"],
            listeners,
        )

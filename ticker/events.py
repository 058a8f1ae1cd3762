"""Subscription lifecycle events, as back ends receive them on the events channel."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
import redis

from ticker.config import Settings
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

# Publish an event only if its id was never published: claiming the marker, the
# append to the replay stream and the publish happen in one script, which Redis runs
# atomically, so a worker that dies after its publish but before it deletes the
# outbox row cannot announce the change a second time when the outbox is flushed
# again. The stream entry's id is spliced into the published JSON as `stream_id`,
# so a live listener knows where to resume a replay from.
_PUBLISH_ONCE = """
if not redis.call('set', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  return {-1, false}
end
local id = redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[2])
local listeners = redis.call('publish', ARGV[1],
  '{"stream_id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
return {listeners, id}
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


# The order the README shows. Events kept in the outbox come back from PostgreSQL's
# jsonb with their keys reordered; JSON readers do not care, people reading
# `redis-cli SUBSCRIBE` do.
_EVENT_ORDER = ("event_id", "event_type", "instrument_token", "metadata", "timestamp",
                "sequence")
_METADATA_ORDER = ("tradingsymbol", "segment", "requested_mode", "account_id")


def in_documented_order(event: dict[str, Any]) -> dict[str, Any]:
    """`event` with its keys, and its metadata's, in the documented order."""
    ordered = _ordered(event, _EVENT_ORDER)
    if isinstance(ordered.get("metadata"), dict):
        ordered["metadata"] = _ordered(ordered["metadata"], _METADATA_ORDER)
    return ordered


def _ordered(mapping: dict[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    return {**{k: mapping[k] for k in first if k in mapping},
            **{k: v for k, v in mapping.items() if k not in first}}


class EventPublisher:
    """Publishes each event once: appended to a capped stream, then on the channel."""

    def __init__(self, client: redis.Redis, channel: str, key_prefix: str,
                 stream: str, stream_maxlen: int) -> None:
        self._client = client
        self._channel = channel
        self._stream = stream
        self._stream_maxlen = stream_maxlen
        self._marker_prefix = f"{key_prefix}event-published:"
        self._publish_once = client.register_script(_PUBLISH_ONCE)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> EventPublisher:
        return cls(client, settings.events_channel, settings.key_prefix,
                   settings.events_stream, settings.events_stream_maxlen)

    def publish(self, event: dict[str, Any]) -> str | None:
        """Publish `event`; its stream id, or None when its `event_id` went out before."""
        listeners, stream_id = self._publish_once(
            keys=[self._marker_prefix + event["event_id"], self._stream],
            args=[self._channel, orjson.dumps(in_documented_order(event)),
                  PUBLISHED_MARKER_TTL_S,
                  self._stream_maxlen],
        )
        if listeners < 0:
            log.warning(
                "event already published, not sent again id=%s type=%s token=%s",
                event["event_id"], event["event_type"], event["instrument_token"],
            )
            return None
        log.info(
            "event published id=%s stream_id=%s type=%s token=%s account=%s "
            "sequence=%s listeners=%d",
            event["event_id"],
            stream_id.decode(),
            event["event_type"],
            event["instrument_token"],
            event["metadata"]["account_id"],
            event.get("sequence"),
            listeners,
        )
        return stream_id.decode()  # type: ignore[no-any-return]


# The largest id a Redis stream can hold: two unsigned 64-bit numbers.
_LAST_STREAM_ID = (2**64 - 1, 2**64 - 1)


def _stream_id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def read_stream(client: redis.Redis, stream: str, after: str, limit: int
                ) -> tuple[list[dict[str, Any]], bool]:
    """Events stored after stream id `after` (oldest first, at most `limit`).

    Also says whether some events after `after` may be gone: the stream is capped,
    and once it has been trimmed past `after`, a replay from there is incomplete.
    """
    if _stream_id_key(after) == _LAST_STREAM_ID:
        # Redis refuses an exclusive start past its last possible id: nothing is after it.
        return [], False
    pipe = client.pipeline(transaction=True)
    pipe.xrange(stream, min=f"({after}" if after != "0" else "-", count=limit)
    pipe.xrange(stream, count=1)
    pipe.xlen(stream)
    entries, first, length = pipe.execute()
    events = _decoded(entries)
    gap = False
    if first:
        added = client.xinfo_stream(stream)["entries-added"]
        # Entries were trimmed, and the oldest one left is newer than `after`.
        gap = added > length and _stream_id_after(first[0][0].decode(), after)
    return events, gap


def read_newest(client: redis.Redis, stream: str, count: int) -> list[dict[str, Any]]:
    """The newest `count` stored events, newest first, shaped as `read_stream` gives them."""
    return _decoded(client.xrevrange(stream, count=count))


def _decoded(entries: Any) -> list[dict[str, Any]]:
    # Clients here are built without decode_responses: ids and fields come as bytes.
    return [{"stream_id": entry_id.decode(), **orjson.loads(fields[b"event"])}
            for entry_id, fields in entries]


def _stream_id_after(stream_id: str, other: str) -> bool:
    return _stream_id_key(stream_id) > _stream_id_key(other)

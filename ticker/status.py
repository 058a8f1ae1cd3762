"""What the operators' status page reads beyond the API's own answers.

The newest events come straight off the capped events stream (newest first, one
XREVRANGE), and each subscription's backfill progress is the last backfill outcome
found among them: no extra table and no extra query per subscription. A token whose
last backfill is older than the events scanned shows no outcome, which the page
says rather than guesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis

from ticker.events import BACKFILL_COMPLETED, BACKFILL_FAILED


@dataclass(frozen=True)
class BackfillOutcome:
    state: str  # "completed" or "failed"
    interval: str | None
    candles_stored: int | None
    candles_received: int | None
    reason: str | None
    at: float  # epoch seconds of the event

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "interval": self.interval,
            "candles_stored": self.candles_stored,
            "candles_received": self.candles_received,
            "reason": self.reason,
            "at": self.at,
        }


def read_recent_events(client: redis.Redis, stream: str, count: int
                       ) -> list[dict[str, Any]]:
    """The newest `count` stored events, newest first, shaped as /events gives them."""
    # The client is built without decode_responses: ids and fields come as bytes.
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                   client.xrevrange(stream, count=count))
    return [
        {"stream_id": entry_id.decode(), **orjson.loads(fields[b"event"])}
        for entry_id, fields in entries
    ]


def backfill_outcomes(events_newest_first: list[dict[str, Any]]
                      ) -> dict[int, BackfillOutcome]:
    """Each token's latest backfill outcome among `events_newest_first`."""
    outcomes: dict[int, BackfillOutcome] = {}
    for event in events_newest_first:
        kind = event.get("event_type")
        token = event.get("instrument_token")
        if kind not in (BACKFILL_COMPLETED, BACKFILL_FAILED) or not isinstance(token, int):
            continue
        if token in outcomes:
            continue  # an older outcome of a token already seen
        metadata = event.get("metadata") or {}
        outcomes[token] = BackfillOutcome(
            state="completed" if kind == BACKFILL_COMPLETED else "failed",
            interval=metadata.get("interval"),
            candles_stored=metadata.get("candles_stored"),
            candles_received=metadata.get("candles_received"),
            reason=metadata.get("reason"),
            at=float(event.get("timestamp") or 0.0),
        )
    return outcomes

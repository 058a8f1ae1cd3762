"""Each subscription's backfill progress, as the operators' status page shows it.

It is the last backfill outcome among the newest events (`events.read_newest`, one
XREVRANGE on the capped events stream): no extra table and no extra query per
subscription. A token whose last backfill is older than the events scanned shows
no outcome, which the page says rather than guesses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
        return asdict(self)


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

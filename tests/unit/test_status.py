"""Backfill progress as the status page derives it from the newest events."""

from __future__ import annotations

from ticker.status import backfill_outcomes


def event(kind: str, token: int, at: float, **metadata) -> dict:
    return {"event_type": kind, "instrument_token": token, "timestamp": at,
            "metadata": {"account_id": "sim-a", **metadata}}


def test_each_token_gets_its_newest_backfill_outcome_and_other_events_are_ignored():
    newest_first = [
        event("subscription_removed", 1, 9.0),
        event("backfill_failed", 1, 8.0, interval="minute", reason="refused"),
        event("backfill_completed", 1, 7.0, interval="minute", candles_stored=5,
              candles_received=5),
        event("backfill_completed", 2, 6.0, interval="minute", candles_stored=0,
              candles_received=375),
        event("subscription_created", 3, 5.0),
    ]

    outcomes = backfill_outcomes(newest_first)

    assert set(outcomes) == {1, 2}
    failed = outcomes[1]
    assert (failed.state, failed.reason, failed.at) == ("failed", "refused", 8.0)
    assert (outcomes[2].state, outcomes[2].candles_stored,
            outcomes[2].candles_received) == ("completed", 0, 375)

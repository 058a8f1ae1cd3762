"""Backfill workers' presence and the last gap fill, kept in the real Redis."""

from __future__ import annotations

import uuid

import pytest

from ticker import backfill_presence


@pytest.fixture
def prefix(redis_client):
    prefix = f"test:presence:{uuid.uuid4().hex[:8]}:"
    yield prefix
    redis_client.delete(backfill_presence.workers_key(prefix),
                        backfill_presence.gap_fill_key(prefix))


def test_an_announced_worker_runs_until_its_entry_lapses(redis_client, prefix):
    backfill_presence.announce(redis_client, prefix, "backfill@a", 6.0, now=lambda: 100.0)
    backfill_presence.announce(redis_client, prefix, "backfill@b", 6.0, now=lambda: 103.0)

    assert backfill_presence.running(redis_client, prefix, now=lambda: 105.0) == [
        "backfill@a", "backfill@b"]
    assert backfill_presence.running(redis_client, prefix, now=lambda: 107.0) == ["backfill@b"]
    # A lapsed entry is gone for good, not hidden: the set does not grow with restarts.
    assert redis_client.zcard(backfill_presence.workers_key(prefix)) == 1


def test_a_withdrawn_worker_is_gone_at_once(redis_client, prefix):
    backfill_presence.announce(redis_client, prefix, "backfill@a", 6.0)
    backfill_presence.withdraw(redis_client, prefix, "backfill@a")

    assert backfill_presence.running(redis_client, prefix) == []


def test_the_last_gap_fill_is_read_back(redis_client, prefix):
    assert backfill_presence.last_gap_fill(redis_client, prefix) is None

    backfill_presence.record_gap_fill(redis_client, prefix, 3, now=lambda: 1_700_000_000.5)
    backfill_presence.record_gap_fill(redis_client, prefix, 7, now=lambda: 1_700_000_900.5)

    assert backfill_presence.last_gap_fill(redis_client, prefix) == {
        "at": 1_700_000_900.5, "queued": 7}

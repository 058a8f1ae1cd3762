"""Backfill against the simulator's historical API, PostgreSQL and Redis, for real."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from tests.listen import ChannelListener
from ticker.accounts import Account, Accounts, load_accounts
from ticker.backfill_runner import BackfillRunner
from ticker.config import Settings
from ticker.events import EventPublisher
from ticker.historical import HistoricalPacer, HistoricalRefused
from ticker.instruments import Instrument
from ticker.simulator.threaded import SimulatorThread
from ticker.storage import candles as candle_store
from ticker.storage import subscriptions as store
from ticker.storage.pool import make_pool
from ticker.subscriptions import Mode
from ticker.ticks import IST

NIFTY_CE = 13660418
# A Wednesday noon: the five trading days back are Thu 26 Nov to Wed 2 Dec.
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=IST)
LOOKBACK_START = datetime(2026, 11, 26, 9, 15, tzinfo=IST)


@pytest.fixture(scope="module")
def simulator():
    with SimulatorThread(Settings(sim_ws_port=0, sim_rest_port=0)) as sim:
        yield sim


@pytest.fixture
def pool(settings, db):
    pool = make_pool(settings.database_url, "test-backfill", max_size=2)
    yield pool
    pool.close()
    db.execute("TRUNCATE candles")


def active_subscription(db, token: int = NIFTY_CE) -> None:
    placed = store.place(
        db, Instrument(token, "NIFTY-TEST-CE", "NFO", "NFO-OPT"), Mode.FULL,
        [("sim-a", 100)], lambda _: True, str(uuid.uuid4()),
    ).subscription
    store.record_applied(db, token, "sim-a", Mode.FULL, placed.version, lambda *_: None)


def make_runner(settings, simulator, pool, redis_client, accounts: Accounts | None = None):
    # One pace for the module, as the simulator keeps one window per api_key for
    # its whole life: tests in a row share it like processes of one service would.
    return BackfillRunner(
        accounts=accounts or load_accounts(settings.accounts_file),
        pool=pool,
        pacer=HistoricalPacer(redis_client, f"{settings.key_prefix}backfill-tests:", 3, 1.1),
        events=EventPublisher.from_settings(redis_client, settings),
        rest_root=simulator.rest_url,
        trading_days=5,
    )


def stored(db) -> list[tuple]:
    return db.execute(
        "SELECT start_at, open, high, low, close, volume, oi FROM candles ORDER BY start_at"
    ).fetchall()


def test_a_first_backfill_stores_five_trading_days_and_announces_it(
    settings, simulator, pool, db, redis_client
):
    active_subscription(db)
    runner = make_runner(settings, simulator, pool, redis_client)

    with ChannelListener(settings.redis_url, settings.events_channel) as events:
        details = runner.run(NIFTY_CE, "minute", now=NOW)
        [event] = events.wait_for(lambda m: m["event_type"] == "backfill_completed", 5)

    rows = stored(db)
    assert details["candles_stored"] == len(rows) == details["candles_received"]
    # Four full sessions of 375 minutes, then Wednesday from 09:15 to 12:00.
    assert 4 * 375 + 165 <= len(rows) <= 4 * 375 + 166
    assert rows[0][0] == LOOKBACK_START
    assert rows[-1][0] <= NOW
    assert all(r[6] is not None for r in rows), "an option's candles carry OI"
    assert all(r[2] >= max(r[1], r[4]) and r[3] <= min(r[1], r[4]) for r in rows)
    assert event["instrument_token"] == NIFTY_CE
    assert event["metadata"]["candles_stored"] == len(rows)
    assert event["metadata"]["interval"] == "minute"
    assert event["metadata"]["from"] == LOOKBACK_START.isoformat()


def test_a_second_backfill_stores_nothing_twice(settings, simulator, pool, db, redis_client):
    active_subscription(db)
    runner = make_runner(settings, simulator, pool, redis_client)
    runner.run(NIFTY_CE, "minute", now=NOW)
    before = stored(db)

    again = runner.run(NIFTY_CE, "minute", now=NOW)
    inserted, changed = candle_store.upsert(
        db, candle_store.between(db, NIFTY_CE, "minute", LOOKBACK_START, NOW, 10_000)
    )

    assert again["candles_stored"] == 0
    assert (inserted, changed) == (0, 0)
    assert stored(db) == before


def test_a_gap_is_filled_exactly(settings, simulator, pool, db, redis_client):
    active_subscription(db)
    runner = make_runner(settings, simulator, pool, redis_client)
    runner.run(NIFTY_CE, "minute", now=NOW)
    complete = stored(db)
    deleted = db.execute(
        "DELETE FROM candles WHERE start_at > %s",
        (datetime(2026, 12, 2, 11, 0, tzinfo=IST),),
    ).rowcount

    filled = runner.run(NIFTY_CE, "minute", now=NOW)

    assert deleted > 50
    assert filled["from"] == datetime(2026, 12, 2, 11, 1, tzinfo=IST).isoformat()
    assert filled["candles_stored"] == filled["candles_received"] == deleted
    assert stored(db) == complete


def test_a_refused_token_fails_without_retry_and_is_announced(
    settings, simulator, pool, db, redis_client
):
    active_subscription(db)
    wrong = Accounts([Account(id="sim-a", api_key="simkey_a", access_token="expired")])
    runner = make_runner(settings, simulator, pool, redis_client, accounts=wrong)

    with pytest.raises(HistoricalRefused, match="TokenException"):
        runner.run(NIFTY_CE, "minute", now=NOW)
    with ChannelListener(settings.redis_url, settings.events_channel) as events:
        runner.report_failure(NIFTY_CE, "minute", "token refused")
        [event] = events.wait_for(lambda m: m["event_type"] == "backfill_failed", 5)

    assert event["metadata"]["reason"] == "token refused"
    assert store.get(db, NIFTY_CE).status.value == "active"
    assert stored(db) == []


def test_an_unsubscribed_token_is_not_backfilled(settings, simulator, pool, db, redis_client):
    runner = make_runner(settings, simulator, pool, redis_client)

    assert runner.run(NIFTY_CE, "minute", now=NOW) is None
    assert stored(db) == []

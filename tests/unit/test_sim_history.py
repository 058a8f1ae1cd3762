"""Historical candles: market hours only, reproducible, Kite's limits, and at the
level of the ticks the simulator streams."""

from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta

import pytest
from kiteconnect import KiteTicker

from ticker.simulator import chain, history
from ticker.simulator.history import InvalidHistoryRequest
from ticker.simulator.market import Market

UNIVERSE = chain.nifty_universe(date(2025, 12, 3))
CALL = UNIVERSE.get(13660418)
INDEX = UNIVERSE.get(256265)
FUTURE = UNIVERSE.get(14483714)
LATER = datetime(2030, 1, 1)
# Monday 2 June 2025 to Wednesday 4 June, and a weekend around it.
MONDAY = datetime(2025, 6, 2)


def candles(
    instrument=CALL,
    interval="minute",
    start=MONDAY,
    end=None,
    oi=True,
    now=LATER,
    reference=None,
):
    end = end or start + timedelta(days=1)
    return history.candles(instrument, interval, start, end, oi, now, reference)


def stamp(candle) -> datetime:
    return datetime.strptime(candle[0], "%Y-%m-%dT%H:%M:%S+0530")


def test_minute_candles_fill_the_session_and_nothing_else():
    rows = candles(start=MONDAY - timedelta(days=2), end=MONDAY + timedelta(hours=23))

    times = [stamp(c) for c in rows]
    assert len(rows) == 375
    assert times[0] == MONDAY.replace(hour=9, minute=15)
    assert times[-1] == MONDAY.replace(hour=15, minute=29)
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(times))


def test_candles_are_consistent_and_carry_oi_when_asked():
    for _, open_, high, low, close, volume, oi in candles():
        assert 0 < low <= min(open_, close) <= max(open_, close) <= high
        assert volume > 0 and volume % 75 == 0
        assert oi > 0

    assert all(len(c) == 6 for c in candles(oi=False))


def test_asking_twice_gives_the_same_candles():
    assert candles() == candles()
    assert candles(interval="day", end=MONDAY + timedelta(days=30)) == candles(
        interval="day", end=MONDAY + timedelta(days=30)
    )


def test_coarser_intervals_aggregate_the_minute_candles():
    minutes = candles(end=MONDAY.replace(hour=23))
    fives = candles(interval="5minute", end=MONDAY.replace(hour=23))

    assert len(fives) == 75
    for i, five in enumerate(fives):
        group = minutes[5 * i : 5 * i + 5]
        assert five[0] == group[0][0]
        assert five[1] == group[0][1]
        assert five[2] == max(c[2] for c in group)
        assert five[3] == min(c[3] for c in group)
        assert five[4] == group[-1][4]
        assert five[5] == sum(c[5] for c in group)


def test_hourly_candles_start_at_quarter_past_and_the_last_is_short():
    rows = candles(interval="60minute", end=MONDAY.replace(hour=23))

    assert [stamp(c).strftime("%H:%M") for c in rows] == [
        "09:15", "10:15", "11:15", "12:15", "13:15", "14:15", "15:15",
    ]  # fmt: skip


def test_day_candles_skip_weekends_and_are_stamped_at_midnight():
    rows = candles(
        interval="day", start=datetime(2025, 6, 2), end=datetime(2025, 6, 15)
    )

    assert [c[0] for c in rows] == [
        f"2025-06-{d:02d}T00:00:00+0530" for d in (2, 3, 4, 5, 6, 9, 10, 11, 12, 13)
    ]


def test_an_index_has_no_volume_and_no_open_interest():
    rows = candles(instrument=INDEX)

    assert {c[5] for c in rows} == {0}
    assert {c[6] for c in rows} == {0}
    assert 20_000 < rows[0][1] < 28_000


def test_nothing_after_now_is_returned():
    now = MONDAY.replace(hour=9, minute=20, second=30)

    rows = candles(now=now)

    assert [stamp(c).minute for c in rows] == [15, 16, 17, 18, 19, 20]


@pytest.mark.parametrize(
    ("interval", "days", "message"),
    [
        ("2minute", 1, "invalid interval"),
        ("minute", 61, "interval exceeds max limit: 60 days"),
        ("5minute", 101, "interval exceeds max limit: 100 days"),
        ("day", 2001, "interval exceeds max limit: 2000 days"),
    ],
)
def test_requests_kite_refuses_are_refused(interval, days, message):
    with pytest.raises(InvalidHistoryRequest, match=message):
        history.check_request(interval, MONDAY, MONDAY + timedelta(days=days), False)


def test_from_after_to_and_intraday_continuous_are_refused():
    with pytest.raises(InvalidHistoryRequest, match="after"):
        history.check_request("day", MONDAY, MONDAY - timedelta(days=1), False)
    with pytest.raises(InvalidHistoryRequest, match="continuous"):
        history.check_request("minute", MONDAY, MONDAY, True)
    history.check_request("day", MONDAY, MONDAY, True)


def test_timestamps_parse_with_or_without_a_time():
    assert history.parse_timestamp("2025-06-02 09:15:00", "from") == MONDAY.replace(
        hour=9, minute=15
    )
    assert history.parse_timestamp("2025-06-02", "to") == MONDAY
    with pytest.raises(InvalidHistoryRequest, match="invalid from date"):
        history.parse_timestamp("02/06/2025", "from")
    with pytest.raises(InvalidHistoryRequest, match="invalid to date"):
        history.parse_timestamp(None, "to")


# -- consistent with the ticks ---------------------------------------------

# How far the latest close may sit from the price the ticks start at. Options
# wander wider; below 20 rupees the 0.05 tick is too coarse for a percentage.
UNDERLYING_TOLERANCE = 0.02
OPTION_TOLERANCE = 0.06
CHEAPEST_OPTION_CHECKED = 20.0


def tolerance(instrument) -> float:
    return OPTION_TOLERANCE if instrument.strike else UNDERLYING_TOLERANCE


def near_the_money(universe):
    """The index, the futures and the priced options of the nearest expiry."""
    nearest = min(i.expiry for i in universe if i.expiry)
    return [
        i
        for i in universe
        if i.instrument_type in ("EQ", "FUT")
        or (
            i.expiry == nearest
            and abs(i.strike - chain.ATM_STRIKE) <= 500
            and i.last_price >= CHEAPEST_OPTION_CHECKED
        )
    ]


def last_close(instrument, now, reference=None) -> float:
    session = datetime.combine(history.latest_session(now), time())
    rows = history.candles(instrument, "minute", session, now, False, now, reference)
    return rows[-1][4]


def test_the_latest_session_is_the_last_one_opened_by_now():
    assert history.latest_session(MONDAY.replace(hour=9, minute=14)) == date(
        2025, 5, 30
    )
    assert history.latest_session(MONDAY.replace(hour=9, minute=15)) == MONDAY.date()
    assert history.latest_session(datetime(2025, 6, 7, 12)) == date(2025, 6, 6)
    assert history.latest_session(datetime(2025, 6, 8, 23)) == date(2025, 6, 6)


@pytest.mark.parametrize(
    "now",
    [
        datetime(2025, 6, 2, 8, 0),  # Monday before the open: Friday's session
        datetime(2025, 6, 2, 9, 15),  # the first minute
        datetime(2025, 9, 10, 12, 30),
        datetime(2025, 11, 6, 20, 0),  # after the close
        datetime(2026, 1, 3, 12, 0),  # a Saturday
    ],
)
def test_the_latest_candle_closes_near_the_instrument_s_last_price(now):
    universe = chain.nifty_universe(now.date())

    for instrument in near_the_money(universe):
        close = last_close(instrument, now)

        assert close == pytest.approx(
            instrument.last_price, rel=tolerance(instrument)
        ), instrument.tradingsymbol


def test_the_latest_candle_closes_near_the_price_the_ticker_streams():
    now = datetime(2025, 12, 3, 13, 0)
    market = Market(UNIVERSE, seed=5, clock=lambda: 1_764_748_800)
    modes = {i.instrument_token: "ltp" for i in (INDEX, FUTURE, CALL)}
    parse = KiteTicker("k", "t")._parse_binary

    # Ten minutes of ticks at the default one a second.
    for cycle in range(1, 600):
        market.frame(modes, cycle)
    ticks = parse(market.frame(modes, 600))

    for tick in ticks:
        instrument = UNIVERSE.get(tick["instrument_token"])
        assert last_close(instrument, now) == pytest.approx(
            tick["last_price"], rel=tolerance(instrument)
        ), instrument.tradingsymbol


def test_a_fixed_reference_session_keeps_past_candles_the_same_the_next_day():
    monday_evening = MONDAY.replace(hour=20)

    asked_monday = candles(now=monday_evening, reference=MONDAY.date())
    asked_tuesday = candles(
        now=monday_evening + timedelta(days=1), reference=MONDAY.date()
    )

    assert asked_monday == asked_tuesday


def test_sessions_away_from_the_reference_still_drift():
    rows = candles(
        instrument=INDEX,
        interval="day",
        start=datetime(2025, 1, 1),
        end=datetime(2025, 12, 31),
        reference=date(2025, 12, 31),
    )

    closes = [c[4] for c in rows]
    assert max(closes) / min(closes) > 1.05
    assert max(closes) / min(closes) < 1.15

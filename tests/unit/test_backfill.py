from datetime import datetime, timedelta

import pytest

from ticker.backfill import (
    MAX_DAYS_PER_REQUEST,
    complete_until,
    gap_start,
    is_derivative,
    split_span,
    trading_days_back,
)
from ticker.ticks import IST


def ist(*args: int) -> datetime:
    return datetime(*args, tzinfo=IST)


def test_five_trading_days_back_from_a_friday_afternoon_starts_monday_morning():
    assert trading_days_back(ist(2026, 12, 4, 14, 0), 5) == ist(2026, 11, 30, 9, 15)


def test_before_the_open_today_does_not_count():
    assert trading_days_back(ist(2026, 12, 4, 8, 0), 5) == ist(2026, 11, 27, 9, 15)


def test_weekends_are_skipped():
    sunday = ist(2026, 12, 6, 12, 0)

    assert trading_days_back(sunday, 1) == ist(2026, 12, 4, 9, 15)
    assert trading_days_back(sunday, 6) == ist(2026, 11, 27, 9, 15)


def test_times_in_other_zones_are_read_in_ist():
    # 03:50 UTC is 09:20 IST: the market is open, so today counts.
    utc = datetime(2026, 12, 4, 3, 50).astimezone(IST)

    assert trading_days_back(utc, 1) == ist(2026, 12, 4, 9, 15)


def test_the_gap_starts_one_candle_after_the_last_stored():
    last = ist(2026, 12, 3, 15, 29)

    assert gap_start(last, ist(2026, 12, 4, 10), "minute", 5) == ist(2026, 12, 3, 15, 30)
    assert gap_start(last, ist(2026, 12, 4, 10), "15minute", 5) == ist(2026, 12, 3, 15, 44)


def test_with_nothing_stored_the_gap_is_the_whole_lookback():
    assert gap_start(None, ist(2026, 12, 4, 10), "minute", 2) == ist(2026, 12, 3, 9, 15)


@pytest.mark.parametrize("interval", sorted(MAX_DAYS_PER_REQUEST))
def test_spans_cover_the_range_without_overlap_within_kites_limits(interval):
    start, end = ist(2020, 1, 1, 9, 15), ist(2026, 12, 4, 15, 30)

    spans = split_span(start, end, interval)

    assert spans[0].start == start and spans[-1].end == end
    for earlier, later in zip(spans, spans[1:]):
        assert later.start == earlier.end + timedelta(seconds=1)
    limit = timedelta(days=MAX_DAYS_PER_REQUEST[interval])
    assert all(s.end - s.start < limit for s in spans)


def test_a_short_range_is_one_request():
    spans = split_span(ist(2026, 12, 1, 9, 15), ist(2026, 12, 4, 15, 30), "minute")

    assert len(spans) == 1


def test_an_empty_range_asks_nothing():
    assert split_span(ist(2026, 12, 4, 10), ist(2026, 12, 4, 9), "minute") == []


def test_an_unknown_interval_is_refused():
    with pytest.raises(ValueError, match="unknown interval"):
        split_span(ist(2026, 12, 1), ist(2026, 12, 2), "2minute")


def test_derivatives_are_told_by_exchange():
    assert is_derivative("NFO") and is_derivative("mcx")
    assert not is_derivative("NSE") and not is_derivative("BSE")


@pytest.mark.parametrize(("now", "interval", "until"), [
    # The minute in progress is left out, to the second.
    (datetime(2026, 12, 2, 12, 0, 0, tzinfo=IST), "minute",
     datetime(2026, 12, 2, 11, 59, 59, tzinfo=IST)),
    (datetime(2026, 12, 2, 12, 0, 37, tzinfo=IST), "minute",
     datetime(2026, 12, 2, 11, 59, 59, tzinfo=IST)),
    # Longer candles count from the session's 09:15 open: at 12:07 the 15-minute
    # candle of 12:00 is forming; at 10:40, the hour that began at 10:15.
    (datetime(2026, 12, 2, 12, 7, tzinfo=IST), "15minute",
     datetime(2026, 12, 2, 11, 59, 59, tzinfo=IST)),
    (datetime(2026, 12, 2, 10, 40, tzinfo=IST), "60minute",
     datetime(2026, 12, 2, 10, 14, 59, tzinfo=IST)),
    # After the close every candle of the day is finished; before the open, all of
    # the days before.
    (datetime(2026, 12, 2, 18, 0, tzinfo=IST), "minute",
     datetime(2026, 12, 2, 17, 59, 59, tzinfo=IST)),
    (datetime(2026, 12, 2, 8, 0, tzinfo=IST), "5minute",
     datetime(2026, 12, 2, 7, 59, 59, tzinfo=IST)),
    # Today's daily candle is taken tomorrow.
    (datetime(2026, 12, 2, 15, 45, tzinfo=IST), "day",
     datetime(2026, 12, 1, 23, 59, 59, tzinfo=IST)),
])
def test_only_finished_candles_are_asked_for(now, interval, until):
    assert complete_until(now, interval) == until

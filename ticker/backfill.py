"""Which historical candles to ask Kite for: intervals, lookback and request spans.

Pure functions over IST datetimes. Kite answers one historical request with at most a
fixed number of days per interval (KITE-NOTES §1.10), so a longer span is split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from ticker.ticks import IST

# The most days one historical request may span, per interval.
MAX_DAYS_PER_REQUEST = {
    "minute": 60,
    "3minute": 100,
    "5minute": 100,
    "10minute": 100,
    "15minute": 200,
    "30minute": 200,
    "60minute": 400,
    "day": 2000,
}
INTERVALS = tuple(MAX_DAYS_PER_REQUEST)

CANDLE_LENGTH = {
    "minute": timedelta(minutes=1),
    "3minute": timedelta(minutes=3),
    "5minute": timedelta(minutes=5),
    "10minute": timedelta(minutes=10),
    "15minute": timedelta(minutes=15),
    "30minute": timedelta(minutes=30),
    "60minute": timedelta(minutes=60),
    "day": timedelta(days=1),
}

MARKET_OPEN = time(9, 15)

# Segments whose instruments carry open interest, so `oi=1` is asked for.
DERIVATIVE_EXCHANGES = frozenset({"NFO", "BFO", "MCX", "CDS", "BCD", "NCO"})


@dataclass(frozen=True)
class Candle:
    instrument_token: int
    interval: str
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    oi: int | None


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime


def is_derivative(exchange: str) -> bool:
    return exchange.upper() in DERIVATIVE_EXCHANGES


def trading_days_back(now: datetime, trading_days: int) -> datetime:
    """The market open of the `trading_days`-th weekday back, counting today.

    Today counts once the market has opened; weekends never count. Exchange holidays
    are not known here, so a holiday in the window shortens it by one day of data.
    """
    local = now.astimezone(IST)
    day: date = local.date()
    if day.weekday() >= 5 or local.time() < MARKET_OPEN:
        day = _previous_weekday(day)
    for _ in range(trading_days - 1):
        day = _previous_weekday(day)
    return datetime.combine(day, MARKET_OPEN, IST)


def gap_start(
    last_stored: datetime | None, now: datetime, interval: str, trading_days: int
) -> datetime:
    """Where fetching resumes: after the last stored candle, or the full lookback."""
    if last_stored is None:
        return trading_days_back(now, trading_days)
    return last_stored + CANDLE_LENGTH[interval]


def complete_until(now: datetime, interval: str) -> datetime:
    """The last moment of the last finished candle: the one in progress is left out.

    Kite answers a historical request with the candle still forming, and a stored
    candle is never fetched again, so taking it would keep its half-minute close
    for good. Intraday candles start at the session's open (09:15 IST) and follow
    one another; a day's candle is taken once the day is over.
    """
    local = now.astimezone(IST)
    if interval == "day":
        midnight = datetime.combine(local.date(), time(0), IST)
        return midnight - timedelta(seconds=1)
    length = CANDLE_LENGTH[interval]
    session_open = datetime.combine(local.date(), MARKET_OPEN, IST)
    forming = session_open + ((local - session_open) // length) * length
    return forming - timedelta(seconds=1)


def split_span(start: datetime, end: datetime, interval: str) -> list[Span]:
    """[start, end] cut into pieces no longer than one request may ask for."""
    if interval not in MAX_DAYS_PER_REQUEST:
        raise ValueError(f"unknown interval {interval!r}; use one of {INTERVALS}")
    step = timedelta(days=MAX_DAYS_PER_REQUEST[interval])
    spans = []
    cursor = start
    while cursor <= end:
        piece_end = min(cursor + step - timedelta(seconds=1), end)
        spans.append(Span(cursor, piece_end))
        cursor = piece_end + timedelta(seconds=1)
    return spans


def _previous_weekday(day: date) -> date:
    day -= timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day

"""Historical candles: deterministic, inside NSE market hours, Kite's shape.

Every session (a weekday, 09:15 to 15:30 IST) of an instrument is one seeded
path of minute bars, so the same token and time always give the same candle and
coarser intervals are exact aggregates of the minute candles. Holidays are not
modelled; weekends are. Sessions are not chained: each opens near a slowly
drifting anchor price, and overnight gaps are normal in real data anyway.

The candles must join up with the ticks the simulator streams, which start at the
instrument's `last_price` (the dump's "previous close"). So the anchor's drift is
measured from a reference session, by default the latest one opened when the
simulator started, whose anchor is `last_price` itself; and within a session the
price is pulled back towards its anchor, so a session ends within about a percent
of it (options a few percent) instead of wandering off like a free random walk.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Final

from ticker.errors import TickerError
from ticker.simulator import packets
from ticker.simulator.universe import Instrument

DAY: Final = "day"
# Minutes per candle for each interval Kite offers.
INTERVAL_MINUTES: Final = {
    "minute": 1,
    "3minute": 3,
    "5minute": 5,
    "10minute": 10,
    "15minute": 15,
    "30minute": 30,
    "60minute": 60,
    DAY: 375,
}
# The longest span one request may ask for, per interval (Kite's limits).
MAX_DAYS: Final = {
    "minute": 60,
    "3minute": 100,
    "5minute": 100,
    "10minute": 100,
    "15minute": 200,
    "30minute": 200,
    "60minute": 400,
    DAY: 2000,
}
SESSION_OPEN: Final = time(9, 15)
SESSION_MINUTES: Final = 375
# Each minute the price moves this fraction of the way back to its session's
# anchor: enough to bound a session's wander, not enough to flatten its candles.
PULL_PER_MINUTE: Final = 0.02
# Kite's timestamp spelling in candles: an IST offset without a colon.
_STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S+0530"
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_OPTION_TYPES = frozenset({"CE", "PE"})
_OI_TYPES = frozenset({"CE", "PE", "FUT"})

Candle = list[object]


class InvalidHistoryRequest(TickerError):
    """A historical-data request Kite would answer with an InputException."""


def parse_timestamp(text: str | None, name: str) -> datetime:
    """A request's `from` or `to`: IST wall time, naive, as Kite reads it."""
    for form in _DATE_FORMATS:
        try:
            return datetime.strptime((text or "").strip(), form)
        except ValueError:
            continue
    raise InvalidHistoryRequest(
        f"invalid {name} date {text!r}: use yyyy-mm-dd hh:mm:ss (IST)"
    )


def check_request(
    interval: str, start: datetime, end: datetime, continuous: bool
) -> None:
    """Raise InvalidHistoryRequest for anything Kite would refuse."""
    if interval not in INTERVAL_MINUTES:
        raise InvalidHistoryRequest(
            f"invalid interval {interval!r}: use one of {', '.join(INTERVAL_MINUTES)}"
        )
    if start > end:
        raise InvalidHistoryRequest(
            f"invalid from date: {start:%Y-%m-%d %H:%M:%S} is after to date "
            f"{end:%Y-%m-%d %H:%M:%S}"
        )
    limit = MAX_DAYS[interval]
    if end - start > timedelta(days=limit):
        raise InvalidHistoryRequest(f"interval exceeds max limit: {limit} days")
    if continuous and interval != DAY:
        raise InvalidHistoryRequest("continuous data is only available for day candles")


def latest_session(now: datetime) -> date:
    """The day of the most recent session that had opened by `now` (naive IST)."""
    day = now.date()
    if now.time() < SESSION_OPEN:
        day -= timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def candles(
    instrument: Instrument,
    interval: str,
    start: datetime,
    end: datetime,
    with_oi: bool,
    now: datetime,
    reference: date | None = None,
) -> list[Candle]:
    """Candles of `interval` starting within [start, end] and not after `now`.

    All datetimes are naive IST wall times. Day candles are stamped at midnight
    and selected by date. `reference` is the session anchored at the instrument's
    last price (the latest session by `now` if omitted); a long-running caller
    fixes it once, so that the same request keeps getting the same candles.
    """
    if reference is None:
        reference = latest_session(now)
    step = INTERVAL_MINUTES[interval]
    day = start.date()
    last_day = min(end.date(), now.date())
    out: list[Candle] = []
    while day <= last_day:
        if day.weekday() < 5:
            out.extend(
                _session_candles(
                    instrument, day, reference, interval, step, start, end, now
                )
            )
        day += timedelta(days=1)
    if not with_oi:
        return [candle[:6] for candle in out]
    return out


def _session_candles(
    instrument: Instrument,
    day: date,
    reference: date,
    interval: str,
    step: int,
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[Candle]:
    token = instrument.instrument_token
    divisor = packets.price_divisor(token)
    bars = _session_bars(
        token,
        day.toordinal(),
        reference.toordinal(),
        _base_units(instrument, divisor),
        _tick_units(instrument, divisor),
        max(instrument.lot_size, 1),
        instrument.instrument_type in _OPTION_TYPES,
        not packets.is_index(token),
        instrument.instrument_type in _OI_TYPES,
    )
    opened = datetime.combine(day, SESSION_OPEN)
    out: list[Candle] = []
    for first in range(0, SESSION_MINUTES, step):
        stamp = (
            datetime.combine(day, time())
            if interval == DAY
            else (opened + timedelta(minutes=first))
        )
        if interval != DAY and not start <= stamp <= end:
            continue
        # The current candle is still forming; it covers bars up to now only.
        elapsed = math.floor((now - opened).total_seconds() / 60) + 1
        group = bars[first : min(first + step, elapsed)]
        if not group:
            break
        out.append(
            [
                stamp.strftime(_STAMP_FORMAT),
                group[0][0] / divisor,
                max(bar[1] for bar in group) / divisor,
                min(bar[2] for bar in group) / divisor,
                group[-1][3] / divisor,
                sum(bar[4] for bar in group),
                group[-1][5],
            ]
        )
    return out


@lru_cache(maxsize=256)
def _session_bars(
    token: int,
    ordinal: int,
    reference: int,
    base: int,
    tick: int,
    lot: int,
    is_option: bool,
    has_volume: bool,
    has_oi: bool,
) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """One session's minute bars (open, high, low, close, volume, oi) in units."""
    rng = random.Random(token * 1_000_003 + ordinal)
    # A slow, bounded drift from session to session, none at the reference session.
    anchor = base * (1 + _drift(ordinal) - _drift(reference))
    sigma = base * (0.002 if is_option else 0.0004)
    floor = tick
    price = max(floor, anchor * (1 + (rng.random() - 0.5) * 0.01))
    oi = lot * (1000 + int(rng.random() * 50_000)) if has_oi else 0
    random_ = rng.random

    bars = []
    for _ in range(SESSION_MINUTES):
        open_ = price
        # Uniform steps with the spread of a normal one of width sigma.
        pull = PULL_PER_MINUTE * (anchor - open_)
        close = max(floor, open_ + pull + (random_() - 0.5) * 3.46 * sigma)
        high = max(open_, close) + random_() * 0.5 * sigma
        low = max(floor, min(open_, close) - random_() * 0.5 * sigma)
        volume = lot * (1 + int(random_() * 200)) if has_volume else 0
        if has_oi:
            oi = max(0, oi + lot * int(12 * random_() - 5))
        bars.append(
            (
                _on_tick(open_, tick),
                _on_tick(high, tick),
                _on_tick(low, tick),
                _on_tick(close, tick),
                volume,
                oi,
            )
        )
        price = close
    return tuple(bars)


def _drift(ordinal: int) -> float:
    """The anchor's swing on a day, as a fraction of the base price (within 6%)."""
    return 0.04 * math.sin(ordinal / 11.0) + 0.02 * math.sin(ordinal / 3.7)


def _base_units(instrument: Instrument, divisor: int) -> int:
    if instrument.last_price > 0:
        return round(instrument.last_price * divisor)
    # No price in the dump: derive a stable one from the token.
    return (100 + instrument.instrument_token % 2000) * divisor


def _tick_units(instrument: Instrument, divisor: int) -> int:
    return max(1, round(instrument.tick_size * divisor) or round(0.05 * divisor))


def _on_tick(units: float, tick: int) -> int:
    return max(tick, round(units / tick) * tick)

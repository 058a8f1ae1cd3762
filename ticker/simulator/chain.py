"""The generated default universe: the NIFTY 50 index and its derivatives.

Tokens are assigned in a fixed order from fixed starting numbers, so they are the
same on every run whatever the date; only the contracts behind them (expiry dates
and symbols) roll forward with the calendar. The first option, exchange token
53361 (instrument token 13660418), is always the nearest expiry's 24000 CE: tests
and examples across the project rely on that one token.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

from ticker.simulator.universe import Instrument, Universe

IST = timezone(timedelta(hours=5, minutes=30), "IST")

NIFTY_INDEX_TOKEN = 256265
NIFTY_INDEX_EXCHANGE_TOKEN = 1001
FIRST_OPTION_EXCHANGE_TOKEN = 53361
# instrument_token = exchange_token << 8 | segment; NFO is segment 2.
NFO_SEGMENT = 2

SPOT = 24000.0
ATM_STRIKE = 24000
STRIKE_STEP = 50
# 201 strikes per expiry: enough for one connection to hold Kite's 3000-instrument
# limit from the default universe alone.
STRIKES_EACH_SIDE = 100
WEEKLY_EXPIRIES = 8
FUTURE_MONTHS = 3
LOT_SIZE = 75
TICK_SIZE = 0.05
# Annualised volatility and carry used to price the chain's starting premiums.
VOLATILITY = 0.13
CARRY_RATE = 0.065

# Weekly symbols code the month as 1-9, O, N, D; monthly ones spell it out.
_WEEKLY_MONTH_CODES = "123456789OND"
_MONTH_NAMES = (
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN",
    "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
)  # fmt: skip
_TUESDAY = 1


def nifty_universe(today: date | None = None) -> Universe:
    """The default universe as of `today` (the current date in IST if omitted)."""
    return Universe(nifty_chain(today or datetime.now(IST).date()))


def nifty_chain(today: date) -> list[Instrument]:
    """The index; options by expiry, strike (ATM outwards) and CE/PE; futures."""
    instruments = [_nifty_index()]
    exchange_token = FIRST_OPTION_EXCHANGE_TOKEN

    for expiry in weekly_expiries(today, WEEKLY_EXPIRIES):
        for offset in _centre_out(STRIKES_EACH_SIDE):
            strike = ATM_STRIKE + offset * STRIKE_STEP
            for kind in ("CE", "PE"):
                instruments.append(_option(exchange_token, expiry, strike, kind, today))
                exchange_token += 1

    for expiry in monthly_expiries(today, FUTURE_MONTHS):
        instruments.append(_future(exchange_token, expiry, today))
        exchange_token += 1

    return instruments


def weekly_expiries(today: date, count: int) -> list[date]:
    """The next `count` Tuesdays, today included (NIFTY options expire on Tuesdays)."""
    first = today + timedelta(days=(_TUESDAY - today.weekday()) % 7)
    return [first + timedelta(weeks=week) for week in range(count)]


def monthly_expiries(today: date, count: int) -> list[date]:
    """The last Tuesday of this month (if not past) and of the following months."""
    expiries: list[date] = []
    year, month = today.year, today.month
    while len(expiries) < count:
        expiry = _last_tuesday(year, month)
        if expiry >= today:
            expiries.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return expiries


def is_monthly_expiry(expiry: date) -> bool:
    """The month's last expiry takes the monthly symbol format."""
    return (expiry + timedelta(weeks=1)).month != expiry.month


def option_symbol(expiry: date, strike: int, kind: str) -> str:
    """Kite's tradingsymbol: NIFTY25D0924000CE weekly, NIFTY25DEC24000CE monthly."""
    year = f"{expiry.year % 100:02d}"
    if is_monthly_expiry(expiry):
        return f"NIFTY{year}{_MONTH_NAMES[expiry.month - 1]}{strike}{kind}"
    code = _WEEKLY_MONTH_CODES[expiry.month - 1]
    return f"NIFTY{year}{code}{expiry.day:02d}{strike}{kind}"


def future_symbol(expiry: date) -> str:
    return f"NIFTY{expiry.year % 100:02d}{_MONTH_NAMES[expiry.month - 1]}FUT"


def option_premium(spot: float, strike: float, years: float, kind: str) -> float:
    """A Black-Scholes premium with a mild smile, rounded to the tick and never zero.

    Only a plausible starting price is needed, so carry is ignored.
    """
    moneyness = math.log(spot / strike)
    vol = VOLATILITY + 0.6 * moneyness * moneyness
    spread = vol * math.sqrt(years)
    d1 = (moneyness + 0.5 * spread * spread) / spread
    d2 = d1 - spread
    if kind == "CE":
        value = spot * _normal_cdf(d1) - strike * _normal_cdf(d2)
    else:
        value = strike * _normal_cdf(-d2) - spot * _normal_cdf(-d1)
    return max(TICK_SIZE, _round_to_tick(value))


def _nifty_index() -> Instrument:
    # Kite lists the index as an NSE "EQ" row in the INDICES segment with no tick
    # or lot size; the last price only seeds the simulated market.
    return Instrument(
        instrument_token=NIFTY_INDEX_TOKEN,
        exchange_token=NIFTY_INDEX_EXCHANGE_TOKEN,
        tradingsymbol="NIFTY 50",
        name="NIFTY 50",
        last_price=SPOT,
        expiry=None,
        strike=0.0,
        tick_size=0.0,
        lot_size=0,
        instrument_type="EQ",
        segment="INDICES",
        exchange="NSE",
    )


def _option(
    exchange_token: int, expiry: date, strike: int, kind: str, today: date
) -> Instrument:
    return Instrument(
        instrument_token=exchange_token << 8 | NFO_SEGMENT,
        exchange_token=exchange_token,
        tradingsymbol=option_symbol(expiry, strike, kind),
        name="NIFTY",
        last_price=option_premium(SPOT, strike, _years_to(expiry, today), kind),
        expiry=expiry,
        strike=float(strike),
        tick_size=TICK_SIZE,
        lot_size=LOT_SIZE,
        instrument_type=kind,
        segment="NFO-OPT",
        exchange="NFO",
    )


def _future(exchange_token: int, expiry: date, today: date) -> Instrument:
    price = SPOT * (1 + CARRY_RATE * _years_to(expiry, today))
    return Instrument(
        instrument_token=exchange_token << 8 | NFO_SEGMENT,
        exchange_token=exchange_token,
        tradingsymbol=future_symbol(expiry),
        name="NIFTY",
        last_price=_round_to_tick(price),
        expiry=expiry,
        strike=0.0,
        tick_size=TICK_SIZE,
        lot_size=LOT_SIZE,
        instrument_type="FUT",
        segment="NFO-FUT",
        exchange="NFO",
    )


def _centre_out(each_side: int) -> Iterator[int]:
    yield 0
    for step in range(1, each_side + 1):
        yield -step
        yield step


def _last_tuesday(year: int, month: int) -> date:
    first_of_next = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    last_day = first_of_next - timedelta(days=1)
    return last_day - timedelta(days=(last_day.weekday() - _TUESDAY) % 7)


def _years_to(expiry: date, today: date) -> float:
    # An option on its expiry day still has the session left: count half a day.
    return max((expiry - today).days, 0.5) / 365.0


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _round_to_tick(value: float) -> float:
    return round(round(value / TICK_SIZE) * TICK_SIZE, 2)

"""A generated NFO options universe, large enough to fill three full connections.

The default simulated chain has 3,220 instruments; a benchmark that keeps 9,000 live
and still subscribes more needs a bigger market. The rows follow Kite's instruments
CSV (the header the simulator and `KiteConnect.instruments()` both read), and every
token carries NFO's segment byte: instrument_token = exchange_token << 8 | 2.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

DEFAULT_COUNT = 24_000
NFO_SEGMENT = 2
FIRST_EXCHANGE_TOKEN = 40_000
TICK_SIZE = 0.05
MONTHS_AHEAD = 3
CSV_HEADER = (
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price",
    "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment",
    "exchange",
)  # fmt: skip

# Underlyings as (name, spot, strike step, lot size): indices first, then stocks.
UNDERLYINGS = (
    ("NIFTY", 24_000, 50, 75), ("BANKNIFTY", 52_000, 100, 35),
    ("FINNIFTY", 23_500, 50, 65), ("MIDCPNIFTY", 12_500, 25, 140),
    ("RELIANCE", 1_400, 10, 500), ("HDFCBANK", 1_900, 10, 550),
    ("ICICIBANK", 1_350, 10, 700), ("INFY", 1_600, 20, 400),
    ("TCS", 3_500, 50, 175), ("SBIN", 850, 5, 750), ("ITC", 420, 5, 1_600),
    ("LT", 3_600, 50, 150), ("AXISBANK", 1_150, 10, 625), ("KOTAKBANK", 2_100, 20, 400),
    ("BHARTIARTL", 2_000, 20, 475), ("HINDUNILVR", 2_400, 20, 300),
    ("BAJFINANCE", 900, 10, 750), ("MARUTI", 12_500, 100, 50), ("TITAN", 3_400, 50, 175),
    ("SUNPHARMA", 1_700, 20, 350), ("TATASTEEL", 160, 2, 5_500), ("WIPRO", 260, 2, 3_000),
    ("ONGC", 240, 2, 2_250), ("NTPC", 340, 5, 1_500), ("POWERGRID", 290, 5, 1_900),
    ("ADANIENT", 2_400, 20, 300), ("COALINDIA", 390, 5, 1_350), ("M&M", 3_200, 50, 200),
    ("ULTRACEMCO", 11_500, 100, 50), ("ASIANPAINT", 2_300, 20, 250),
)  # fmt: skip

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN",
           "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")  # fmt: skip


def write_instruments_csv(path: Path, count: int = DEFAULT_COUNT,
                          today: date | None = None) -> list[int]:
    """Write `count` option rows to `path`; their tokens, in file order."""
    rows = list(_rows(count, today or date.today()))
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    return [int(row[0]) for row in rows]


def _rows(count: int, today: date) -> Iterator[list[object]]:
    expiries = [_month_end_thursday(today, ahead) for ahead in range(MONTHS_AHEAD)]
    # Strikes per side, so that every underlying and expiry gets an equal share.
    per_chain = math.ceil(count / (len(UNDERLYINGS) * len(expiries) * 2))
    side = per_chain // 2 + 1
    exchange_token = FIRST_EXCHANGE_TOKEN
    produced = 0
    for offset in _centre_out(side):
        for name, spot, step, lot in UNDERLYINGS:
            strike = spot + offset * step
            if strike <= 0:
                continue
            for expiry in expiries:
                for kind in ("CE", "PE"):
                    if produced == count:
                        return
                    token = exchange_token << 8 | NFO_SEGMENT
                    symbol = f"{name}{expiry:%y}{_MONTHS[expiry.month - 1]}{strike}{kind}"
                    yield [
                        token, exchange_token, symbol, name,
                        _premium(spot, strike, kind), expiry.isoformat(),
                        float(strike), TICK_SIZE, lot, kind, "NFO-OPT", "NFO",
                    ]  # fmt: skip
                    exchange_token += 1
                    produced += 1


def _centre_out(side: int) -> Iterator[int]:
    yield 0
    for distance in range(1, side + 1):
        yield distance
        yield -distance


def _premium(spot: float, strike: float, kind: str) -> float:
    """A plausible starting price: intrinsic value plus time value fading with distance."""
    intrinsic = max(spot - strike, 0.0) if kind == "CE" else max(strike - spot, 0.0)
    time_value = 0.02 * spot / (1 + abs(strike - spot) / (0.02 * spot))
    return round(max(intrinsic + time_value, TICK_SIZE) / TICK_SIZE) * TICK_SIZE


def _month_end_thursday(today: date, months_ahead: int) -> date:
    """The last Thursday of the month `months_ahead` after this one."""
    month_index = today.month - 1 + months_ahead
    year, month = today.year + month_index // 12, month_index % 12 + 1
    first_of_next = date(year + month // 12, month % 12 + 1, 1)
    last = first_of_next - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - 3) % 7)

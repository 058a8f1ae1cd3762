"""The instruments the simulator knows, and Kite's CSV dump of them.

A `Universe` is the simulator's whole market: the ticker streams only its tokens
and the REST API serves it as Kite's instruments CSV. It comes either from the
generated NIFTY chain (`chain.py`) or from a real Kite dump loaded from disk, so
tests can run against the exact rows a production fetch would return.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ticker.errors import ConfigInvalid

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One row of Kite's instruments dump."""

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: float
    expiry: date | None
    strike: float
    tick_size: float
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str

    def csv_row(self) -> list[str]:
        # repr() of a float gives Kite's spelling ("0.0", "0.05", "2528.4").
        return [
            str(self.instrument_token),
            str(self.exchange_token),
            self.tradingsymbol,
            self.name,
            repr(self.last_price),
            self.expiry.isoformat() if self.expiry else "",
            repr(self.strike),
            repr(self.tick_size),
            str(self.lot_size),
            self.instrument_type,
            self.segment,
            self.exchange,
        ]


class Universe:
    """Instruments by token, with their CSV rendering cached per exchange."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._by_token: dict[int, Instrument] = {}
        for instrument in instruments:
            self._by_token.setdefault(instrument.instrument_token, instrument)
        self._csv_cache: dict[str | None, bytes] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_token.values())

    def __contains__(self, token: object) -> bool:
        return token in self._by_token

    def get(self, token: int) -> Instrument | None:
        return self._by_token.get(token)

    @property
    def tokens(self) -> list[int]:
        return list(self._by_token)

    def csv(self, exchange: str | None = None) -> bytes:
        """The dump as Kite serves it, optionally only one exchange's rows."""
        key = exchange.upper() if exchange else None
        cached = self._csv_cache.get(key)
        if cached is None:
            rows = (i for i in self if key is None or i.exchange == key)
            cached = self._csv_cache[key] = render_csv(rows).encode()
        return cached


def render_csv(instruments: Iterable[Instrument]) -> str:
    """Kite's CSV text: the header row, then one row per instrument."""
    out = io.StringIO()
    # Kite's dump ends lines with CRLF, the csv module's default.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(i.csv_row() for i in instruments)
    return out.getvalue()


def parse_csv(text: str) -> list[Instrument]:
    """Instruments from Kite's CSV text; the header must name Kite's columns."""
    reader = csv.DictReader(io.StringIO(text))
    missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise ConfigInvalid(
            f"instruments CSV lacks columns {sorted(missing)}; "
            f"expected Kite's header {','.join(CSV_COLUMNS)}"
        )
    instruments = []
    for line, row in enumerate(reader, start=2):
        try:
            instruments.append(_parse_row(row))
        except ValueError as exc:
            raise ConfigInvalid(f"instruments CSV line {line}: {exc}") from exc
    return instruments


def load_universe(path: Path) -> Universe:
    """A universe from a Kite instruments dump on disk."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(
            f"cannot read instruments file {str(path)!r}: {exc}"
        ) from exc
    universe = Universe(parse_csv(text))
    logger.info("universe loaded path=%s instruments=%d", path, len(universe))
    return universe


def _parse_row(row: dict[str, str]) -> Instrument:
    expiry = row["expiry"].strip()
    return Instrument(
        instrument_token=int(row["instrument_token"]),
        exchange_token=int(row["exchange_token"]),
        tradingsymbol=row["tradingsymbol"],
        name=row["name"],
        last_price=float(row["last_price"] or 0),
        expiry=date.fromisoformat(expiry) if expiry else None,
        strike=float(row["strike"] or 0),
        tick_size=float(row["tick_size"] or 0),
        lot_size=int(float(row["lot_size"] or 0)),
        instrument_type=row["instrument_type"],
        segment=row["segment"],
        exchange=row["exchange"],
    )

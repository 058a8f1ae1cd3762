"""Simulated prices: one bounded random walk per instrument, advanced per cycle.

The market is lazy. An instrument gets state the first time someone streams it,
and it moves at most once per tick cycle however many connections stream it, so
the work per cycle grows with the subscribed tokens, not with the universe (a
loaded Kite dump can hold 100k rows). Encoded packets are cached for the rest of
the cycle, so a token streamed on several connections is encoded once per mode.

Prices are integers in the segment's packet units (paise for most segments), the
form the packets carry, so nothing is scaled per tick.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

from ticker.simulator import packets
from ticker.simulator.packets import EMPTY_LEVEL, DepthLevel
from ticker.simulator.universe import Instrument, Universe

# Largest step of one cycle, as a fraction of the price (at least one tick).
STEP_FRACTION = 0.00015
# How far from the previous close the walk may wander: options swing wider.
BAND_FRACTION = 0.10
OPTION_BAND_FRACTION = 0.50
# Tick sizes for rows whose tick_size is 0 (indices), in packet units.
_DEFAULT_TICK_UNITS = {100: 5, 10_000: 25, 10_000_000: 25_000}
_UINT32_MAX = 2**32 - 1
_DERIVATIVE_TYPES = frozenset({"CE", "PE", "FUT"})


class Market:
    """Prices for every streamed instrument of a universe, deterministic per seed."""

    def __init__(
        self,
        universe: Universe,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._universe = universe
        self._seed = seed
        self._rng = random.Random(seed)
        self._clock = clock
        self._quotes: dict[int, _Quote] = {}

    def packet(self, token: int, mode: str, cycle: int) -> bytes:
        """The packet for `token` in `mode` as of tick cycle `cycle`."""
        quote = self._quotes.get(token)
        if quote is None:
            quote = self._quotes[token] = self._open_quote(token)
        if quote.cycle != cycle:
            quote.advance(self._rng, int(self._clock()))
            quote.cycle = cycle
        cached = quote.encoded.get(mode)
        if cached is None:
            cached = quote.encoded[mode] = quote.encode(mode, self._rng)
        return cached

    def frame(self, modes: Mapping[int, str], cycle: int) -> bytes:
        """One binary frame with a packet for every token in `modes`, in its mode."""
        packet = self.packet
        return packets.frame(
            [packet(token, mode, cycle) for token, mode in modes.items()]
        )

    def _open_quote(self, token: int) -> _Quote:
        instrument = self._universe.get(token)
        if instrument is None:
            raise KeyError(f"token {token} is not in the simulator's universe")
        # Each instrument opens from its own seed, so its first prices do not
        # depend on which other tokens were streamed before it.
        return _Quote(instrument, random.Random(self._seed * 1_000_003 + token))


class _Quote:
    """The live state of one instrument, in packet units."""

    __slots__ = (
        "token", "index", "tradable", "has_oi", "tick", "lot", "floor", "ceiling",
        "max_step_ticks", "close", "open", "high", "low", "last_price",
        "last_quantity", "volume", "turnover", "buy_quantity", "sell_quantity",
        "oi", "oi_day_high", "oi_day_low", "last_trade_time", "timestamp",
        "cycle", "encoded",
    )  # fmt: skip

    def __init__(self, instrument: Instrument, rng: random.Random) -> None:
        token = instrument.instrument_token
        divisor = packets.price_divisor(token)
        self.token = token
        self.index = packets.is_index(token)
        self.tradable = not self.index
        self.has_oi = instrument.instrument_type in _DERIVATIVE_TYPES
        self.tick = round(instrument.tick_size * divisor) or _DEFAULT_TICK_UNITS.get(
            divisor, 1
        )
        self.lot = max(instrument.lot_size, 1)

        reference = instrument.last_price or 100 + rng.random() * 2000
        self.close = self._on_tick(reference * divisor)
        band = (
            OPTION_BAND_FRACTION
            if instrument.instrument_type in ("CE", "PE")
            else BAND_FRACTION
        )
        self.floor = max(self.tick, self._on_tick(self.close * (1 - band)))
        self.ceiling = min(
            self._on_tick(self.close * (1 + band)), _UINT32_MAX - 8 * self.tick
        )
        self.max_step_ticks = max(1, round(self.close * STEP_FRACTION / self.tick))

        # The day opened with a small gap from the previous close.
        gap = (rng.random() - 0.5) * 0.01 * self.close
        self.open = min(max(self._on_tick(self.close + gap), self.floor), self.ceiling)
        self.last_price = self.high = self.low = self.open

        self.last_quantity = 0
        self.volume = 0
        self.turnover = 0.0
        self.buy_quantity = self.sell_quantity = 0
        self.oi = self.oi_day_high = self.oi_day_low = 0
        if self.tradable:
            self.last_quantity = self.lot
            self.volume = self.lot * (100 + int(rng.random() * 5000))
            self.turnover = float(self.volume * self.open)
            self.buy_quantity = self.lot * (100 + int(rng.random() * 2000))
            self.sell_quantity = self.lot * (100 + int(rng.random() * 2000))
        if self.has_oi:
            self.oi = self.oi_day_high = self.oi_day_low = self.lot * (
                1000 + int(rng.random() * 50_000)
            )

        self.last_trade_time = self.timestamp = 0
        self.cycle = -1
        self.encoded: dict[str, bytes] = {}

    def advance(self, rng: random.Random, now: int) -> None:
        """Move one cycle: a step of a few ticks, and a trade if tradable."""
        self.encoded.clear()
        self.timestamp = now

        ticks = round((2 * rng.random() - 1) * self.max_step_ticks)
        price = self.last_price + ticks * self.tick
        if not self.floor <= price <= self.ceiling:
            # Reflect off the band instead of sticking to its edge.
            price = self.last_price - ticks * self.tick
            price = min(max(price, self.floor), self.ceiling)
        self.last_price = price
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price

        if not self.tradable:
            return
        lot = self.lot
        self.last_quantity = lot * (1 + int(rng.random() * 8))
        self.volume += self.last_quantity
        self.turnover += price * self.last_quantity
        self.last_trade_time = now
        self.buy_quantity = max(
            lot, self.buy_quantity + lot * int(20 * rng.random() - 10)
        )
        self.sell_quantity = max(
            lot, self.sell_quantity + lot * int(20 * rng.random() - 10)
        )
        if self.has_oi:
            # A slight upward drift, as open interest tends to build into expiry.
            self.oi = max(0, self.oi + lot * int(12 * rng.random() - 5))
            if self.oi > self.oi_day_high:
                self.oi_day_high = self.oi
            elif self.oi < self.oi_day_low:
                self.oi_day_low = self.oi

    def encode(self, mode: str, rng: random.Random) -> bytes:
        if mode == packets.LTP:
            return packets.ltp_packet(self.token, self.last_price)
        if self.index:
            if mode == packets.QUOTE:
                return packets.index_quote_packet(
                    self.token,
                    self.last_price,
                    self.high,
                    self.low,
                    self.open,
                    self.close,
                )
            return packets.index_full_packet(
                self.token,
                self.last_price,
                self.high,
                self.low,
                self.open,
                self.close,
                self.timestamp,
            )
        average_price = round(self.turnover / self.volume) if self.volume else 0
        if mode == packets.QUOTE:
            return packets.quote_packet(
                self.token,
                self.last_price,
                self.last_quantity,
                average_price,
                self.volume,
                self.buy_quantity,
                self.sell_quantity,
                self.open,
                self.high,
                self.low,
                self.close,
            )
        bids, asks = self._depth(rng)
        return packets.full_packet(
            self.token,
            self.last_price,
            self.last_quantity,
            average_price,
            self.volume,
            self.buy_quantity,
            self.sell_quantity,
            self.open,
            self.high,
            self.low,
            self.close,
            self.last_trade_time,
            self.oi,
            self.oi_day_high,
            self.oi_day_low,
            self.timestamp,
            bids,
            asks,
        )

    def _depth(self, rng: random.Random) -> tuple[list[DepthLevel], list[DepthLevel]]:
        """Five bids below and five asks above the last price, a tick apart."""
        bids: list[DepthLevel] = []
        asks: list[DepthLevel] = []
        for level in range(1, packets.DEPTH_LEVELS + 1):
            lots = 1 + int(rng.random() * 20)
            bid = self.last_price - level * self.tick
            bids.append(
                DepthLevel(lots * self.lot, bid, 1 + lots // 3)
                if bid > 0
                else EMPTY_LEVEL
            )
            lots = 1 + int(rng.random() * 20)
            asks.append(
                DepthLevel(
                    lots * self.lot, self.last_price + level * self.tick, 1 + lots // 3
                )
            )
        return bids, asks

    def _on_tick(self, units: float) -> int:
        return max(self.tick, round(units / self.tick) * self.tick)

"""Kite's binary ticker packets and the frames that carry them.

Pure encoding, no I/O: every function turns integers into the exact bytes Kite
sends, so the official client's parser reads them back unchanged. Prices are
passed already scaled by the segment's divisor (`price_divisor`), because the
market keeps them as integers and scaling on every tick would be wasted work.

Layouts are big-endian. A frame is a uint16 packet count followed, for each
packet, by a uint16 length and the packet bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain
from typing import Final, NamedTuple

LTP: Final = "ltp"
QUOTE: Final = "quote"
FULL: Final = "full"
MODES: Final = frozenset({LTP, QUOTE, FULL})

# Segment numbers Kite packs into the low byte of an instrument token.
SEGMENT_CDS: Final = 3
SEGMENT_BCD: Final = 6
SEGMENT_INDICES: Final = 9
SEGMENT_NCO: Final = 12

DEPTH_LEVELS: Final = 5

# A heartbeat is a lone byte; clients drop any frame shorter than two bytes.
HEARTBEAT: Final = b"\x00"

_LTP = struct.Struct(">II")
# Index packets order OHLC as high, low, open, close, then the net change.
_INDEX_QUOTE = struct.Struct(">IIIIIIi")
_INDEX_FULL = struct.Struct(">IIIIIIiI")
_QUOTE = struct.Struct(">11I")
# Quote fields, then last trade time, oi, oi day high/low, exchange timestamp,
# then ten depth entries (five bids, five asks) of quantity, price, orders.
_FULL = struct.Struct(">16I" + "IIH2x" * (2 * DEPTH_LEVELS))
_COUNT = struct.Struct(">H")

LTP_PACKET_LEN: Final = _LTP.size
INDEX_QUOTE_PACKET_LEN: Final = _INDEX_QUOTE.size
INDEX_FULL_PACKET_LEN: Final = _INDEX_FULL.size
QUOTE_PACKET_LEN: Final = _QUOTE.size
FULL_PACKET_LEN: Final = _FULL.size

# Length prefixes of the five packet sizes, built once instead of per packet.
_LENGTH_PREFIX: Final = {
    size: _COUNT.pack(size)
    for size in (
        _LTP.size,
        _INDEX_QUOTE.size,
        _INDEX_FULL.size,
        _QUOTE.size,
        _FULL.size,
    )
}


class DepthLevel(NamedTuple):
    """One price level of market depth; price is scaled like every packet price."""

    quantity: int
    price: int
    orders: int


EMPTY_LEVEL: Final = DepthLevel(0, 0, 0)


def segment_of(token: int) -> int:
    """The exchange segment an instrument token belongs to."""
    return token & 0xFF


def price_divisor(token: int) -> int:
    """What a packet's integer prices are divided by to get rupees."""
    segment = token & 0xFF
    if segment == SEGMENT_CDS:
        return 10_000_000
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 10_000
    return 100


def is_index(token: int) -> bool:
    """Indices get their own, shorter packets and are not tradable."""
    return token & 0xFF == SEGMENT_INDICES


def ltp_packet(token: int, last_price: int) -> bytes:
    return _LTP.pack(token, last_price)


def index_quote_packet(
    token: int, last_price: int, high: int, low: int, open_: int, close: int
) -> bytes:
    return _INDEX_QUOTE.pack(
        token, last_price, high, low, open_, close, last_price - close
    )


def index_full_packet(
    token: int,
    last_price: int,
    high: int,
    low: int,
    open_: int,
    close: int,
    exchange_timestamp: int,
) -> bytes:
    return _INDEX_FULL.pack(
        token,
        last_price,
        high,
        low,
        open_,
        close,
        last_price - close,
        exchange_timestamp,
    )


def quote_packet(
    token: int,
    last_price: int,
    last_quantity: int,
    average_price: int,
    volume: int,
    buy_quantity: int,
    sell_quantity: int,
    open_: int,
    high: int,
    low: int,
    close: int,
) -> bytes:
    return _QUOTE.pack(
        token,
        last_price,
        last_quantity,
        average_price,
        volume,
        buy_quantity,
        sell_quantity,
        open_,
        high,
        low,
        close,
    )


def full_packet(
    token: int,
    last_price: int,
    last_quantity: int,
    average_price: int,
    volume: int,
    buy_quantity: int,
    sell_quantity: int,
    open_: int,
    high: int,
    low: int,
    close: int,
    last_trade_time: int,
    oi: int,
    oi_day_high: int,
    oi_day_low: int,
    exchange_timestamp: int,
    bids: Sequence[DepthLevel],
    asks: Sequence[DepthLevel],
) -> bytes:
    """A 184-byte packet; `bids` and `asks` hold exactly five levels each."""
    if len(bids) != DEPTH_LEVELS or len(asks) != DEPTH_LEVELS:
        raise ValueError(
            f"full packet needs {DEPTH_LEVELS} bids and {DEPTH_LEVELS} asks, "
            f"got {len(bids)} and {len(asks)}; pad with EMPTY_LEVEL"
        )
    return _FULL.pack(
        token,
        last_price,
        last_quantity,
        average_price,
        volume,
        buy_quantity,
        sell_quantity,
        open_,
        high,
        low,
        close,
        last_trade_time,
        oi,
        oi_day_high,
        oi_day_low,
        exchange_timestamp,
        *chain.from_iterable(bids),
        *chain.from_iterable(asks),
    )


def frame(packets: Sequence[bytes]) -> bytes:
    """Join packets into one binary WebSocket message."""
    parts = [_COUNT.pack(len(packets))]
    for packet in packets:
        prefix = _LENGTH_PREFIX.get(len(packet))
        parts.append(prefix if prefix is not None else _COUNT.pack(len(packet)))
        parts.append(packet)
    return b"".join(parts)

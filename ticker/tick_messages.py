"""Tick messages for Redis, written as JSON straight from a frame's packets.

`ticks.parse_frame` builds kiteconnect-shaped dicts, which is what Python callers
want. The publisher only needs each tick's JSON, and it runs for every tick Kite
sends: building a dict and then serialising it costs about twice what formatting
the JSON from the unpacked fields does. So the tick path has a writer of its own,
one precompiled template per packet kind. Its output is the same JSON document as
`orjson.dumps(ticks.parse_packet(packet))`; tests hold the two equal on every packet
kind, generated and real.

Numbers are written with `repr`, the shortest text that reads back as the same float,
as orjson writes them; times as ISO 8601 with their IST offset, as orjson writes an
aware datetime.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from ticker.ticks import (
    DEPTH_LEVELS,
    FULL_LAYOUT,
    FULL_PACKET_LEN,
    INDEX_FULL_LAYOUT,
    INDEX_FULL_PACKET_LEN,
    INDEX_QUOTE_LAYOUT,
    INDEX_QUOTE_PACKET_LEN,
    IST,
    LTP_LAYOUT,
    LTP_PACKET_LEN,
    QUOTE_LAYOUT,
    QUOTE_PACKET_LEN,
    SEGMENT_INDICES,
    price_divisor,
    split_packets,
)

# Distinct times seen in a trading day are few (one a second at most per field);
# past this many the cache starts over rather than grow.
MAX_CACHED_TIMES = 100_000


class TickMessage(NamedTuple):
    instrument_token: int
    last_price: float
    message: bytes


_LEVEL = '{"quantity":%d,"price":%r,"orders":%d}'
_LEVELS = ",".join([_LEVEL] * DEPTH_LEVELS)
_LTP = '{"tradable":%s,"mode":"ltp","instrument_token":%d,"last_price":%r}'
_INDEX = (
    '{"tradable":%s,"mode":"%s","instrument_token":%d,"last_price":%r,'
    '"ohlc":{"high":%r,"low":%r,"open":%r,"close":%r},"change":%r'
)
_QUOTE = (
    '{"tradable":%s,"mode":"%s","instrument_token":%d,"last_price":%r,'
    '"last_traded_quantity":%d,"average_traded_price":%r,"volume_traded":%d,'
    '"total_buy_quantity":%d,"total_sell_quantity":%d,'
    '"ohlc":{"open":%r,"high":%r,"low":%r,"close":%r},"change":%r'
)
_FULL_TAIL = (
    ',"last_trade_time":%s,"oi":%d,"oi_day_high":%d,"oi_day_low":%d,'
    '"exchange_timestamp":%s,"depth":{"buy":['
    + _LEVELS + '],"sell":[' + _LEVELS + "]}}"
)
_FULL = _QUOTE + _FULL_TAIL
_DEPTH_START = 16
_DEPTH_END = _DEPTH_START + 3 * 2 * DEPTH_LEVELS

_times: dict[int, str] = {}


def write_frame(frame: bytes) -> list[TickMessage]:
    """Each tick of a frame as its JSON message, in packet order.

    Packets of a length no mode has are skipped, as `parse_frame` skips them.
    Raises ticker.errors.MalformedFrame when the frame's lengths do not add up.
    """
    messages = []
    for packet in split_packets(frame):
        written = write_packet(packet)
        if written is not None:
            messages.append(written)
    return messages


def write_packet(packet: bytes | memoryview) -> TickMessage | None:
    length = len(packet)
    if length == FULL_PACKET_LEN:
        return _full(FULL_LAYOUT.unpack_from(packet))
    if length == QUOTE_PACKET_LEN:
        return _quote(QUOTE_LAYOUT.unpack_from(packet))
    if length == LTP_PACKET_LEN:
        token, raw_price = LTP_LAYOUT.unpack_from(packet)
        last = raw_price / price_divisor(token)
        message = _LTP % (_tradable(token), token, last)
        return TickMessage(token, last, message.encode())
    if length == INDEX_QUOTE_PACKET_LEN:
        token, last, body = _index(INDEX_QUOTE_LAYOUT.unpack_from(packet), "quote")
        return TickMessage(token, last, (body + "}").encode())
    if length == INDEX_FULL_PACKET_LEN:
        values = INDEX_FULL_LAYOUT.unpack_from(packet)
        token, last, body = _index(values[:6], "full")
        tail = ',"exchange_timestamp":%s}' % _iso(values[6])
        return TickMessage(token, last, (body + tail).encode())
    return None


def _index(values: tuple[int, ...], mode: str) -> tuple[int, float, str]:
    token, raw_last, high, low, open_, close = values
    divisor = price_divisor(token)
    last = raw_last / divisor
    close_price = close / divisor
    body = _INDEX % (
        _tradable(token), mode, token, last, high / divisor, low / divisor,
        open_ / divisor, close_price, _change(last, close_price),
    )
    return token, last, body


def _quote(values: tuple[int, ...]) -> TickMessage:
    token = values[0]
    divisor = price_divisor(token)
    last = values[1] / divisor
    close = values[10] / divisor
    body = _QUOTE % (
        _tradable(token), "quote", token, last, values[2], values[3] / divisor,
        values[4], values[5], values[6], values[7] / divisor, values[8] / divisor,
        values[9] / divisor, close, _change(last, close),
    )
    return TickMessage(token, last, (body + "}").encode())


def _full(values: tuple[int, ...]) -> TickMessage:
    token = values[0]
    divisor = price_divisor(token)
    last = values[1] / divisor
    close = values[10] / divisor
    depth: list[float] = []
    for i in range(_DEPTH_START, _DEPTH_END, 3):
        depth += (values[i], values[i + 1] / divisor, values[i + 2])
    message = _FULL % (
        _tradable(token), "full", token, last, values[2], values[3] / divisor,
        values[4], values[5], values[6], values[7] / divisor, values[8] / divisor,
        values[9] / divisor, close, _change(last, close),
        _iso(values[11]), values[12], values[13], values[14], _iso(values[15]),
        *depth,
    )
    return TickMessage(token, last, message.encode())


def _tradable(token: int) -> str:
    return "false" if token & 0xFF == SEGMENT_INDICES else "true"


def _change(last_price: float, close: float) -> float:
    # As ticks._change, and so as the official client computes it.
    if close == 0:
        return 0
    return (last_price - close) * 100 / close


def _iso(unix_s: int) -> str:
    """A time as a quoted JSON string; cached, since a frame's ticks share few times."""
    text = _times.get(unix_s)
    if text is None:
        if len(_times) >= MAX_CACHED_TIMES:
            _times.clear()
        text = _times[unix_s] = '"%s"' % datetime.fromtimestamp(unix_s, IST).isoformat()
    return text

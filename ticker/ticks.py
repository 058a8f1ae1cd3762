"""Kite's binary ticker frames, decoded into kiteconnect-shaped tick dicts.

The layouts are the ones the official client reads (see KITE-NOTES §1.3): a frame is a
uint16 packet count followed by length-prefixed packets, big-endian throughout, and a
packet's length alone tells its mode. Each layout is a precompiled `struct.Struct`, and
a packet is decoded with one `unpack_from` call, straight from the frame.

The output uses the official client's field names and values, with one deliberate
difference: times are timezone-aware (IST) instead of naive host-local datetimes, so
they survive serialisation with their offset.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Any

from ticker.errors import MalformedFrame

IST = timezone(timedelta(hours=5, minutes=30), "IST")

MODE_LTP = "ltp"
MODE_QUOTE = "quote"
MODE_FULL = "full"

# Segment ids carried in the low byte of an instrument token.
SEGMENT_CDS = 3
SEGMENT_BCD = 6
SEGMENT_INDICES = 9
SEGMENT_NCO = 12

LTP_PACKET_LEN = 8
INDEX_QUOTE_PACKET_LEN = 28
INDEX_FULL_PACKET_LEN = 32
QUOTE_PACKET_LEN = 44
FULL_PACKET_LEN = 184
DEPTH_LEVELS = 5

_COUNT = struct.Struct(">H")
_LENGTH = struct.Struct(">H")
# Each packet kind's layout, read with one unpack_from (also by ticker.tick_messages).
LTP_LAYOUT = struct.Struct(">II")
INDEX_QUOTE_LAYOUT = struct.Struct(">6I")
INDEX_FULL_LAYOUT = struct.Struct(">6I4xI")
QUOTE_LAYOUT = struct.Struct(">11I")
FULL_LAYOUT = struct.Struct(">16I" + "IIH2x" * (2 * DEPTH_LEVELS))

Tick = dict[str, Any]


def price_divisor(instrument_token: int) -> float:
    """What a packet's integer prices are divided by, which depends on the segment."""
    segment = instrument_token & 0xFF
    if segment == SEGMENT_CDS:
        return 10_000_000.0
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 10_000.0
    return 100.0


def split_packets(frame: bytes) -> list[memoryview]:
    """The packets of one frame; a heartbeat (shorter than a count) holds none."""
    if len(frame) < _COUNT.size:
        return []
    view = memoryview(frame)
    (count,) = _COUNT.unpack_from(view, 0)
    packets = []
    offset = _COUNT.size
    for _ in range(count):
        if offset + _LENGTH.size > len(view):
            raise MalformedFrame(
                f"frame of {len(frame)} bytes announces {count} packets "
                f"but ends after {len(packets)}"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise MalformedFrame(
                f"packet {len(packets)} claims {length} bytes; only "
                f"{len(view) - offset} remain in the frame"
            )
        packets.append(view[offset : offset + length])
        offset += length
    return packets


_TOKEN = struct.Struct(">I")


def packet_tokens(frame: bytes) -> list[int]:
    """The instrument token of every packet in a frame, without parsing the rest."""
    packets = split_packets(frame)
    return [_TOKEN.unpack_from(p)[0] for p in packets if len(p) >= _TOKEN.size]


def parse_frame(frame: bytes) -> list[Tick]:
    """Every tick in one binary frame, in packet order.

    Packets of a length no mode has are skipped, as the official client does, so a
    future packet kind cannot break the stream.
    """
    ticks = []
    for packet in split_packets(frame):
        tick = parse_packet(packet)
        if tick is not None:
            ticks.append(tick)
    return ticks


def parse_packet(packet: bytes | memoryview) -> Tick | None:
    """One packet decoded by its length, or None for an unknown length."""
    length = len(packet)
    if length == QUOTE_PACKET_LEN:
        return _quote(QUOTE_LAYOUT.unpack_from(packet))
    if length == FULL_PACKET_LEN:
        return _full(FULL_LAYOUT.unpack_from(packet))
    if length == LTP_PACKET_LEN:
        token, last_price = LTP_LAYOUT.unpack_from(packet)
        return {
            "tradable": token & 0xFF != SEGMENT_INDICES,
            "mode": MODE_LTP,
            "instrument_token": token,
            "last_price": last_price / price_divisor(token),
        }
    if length == INDEX_QUOTE_PACKET_LEN:
        return _index(INDEX_QUOTE_LAYOUT.unpack_from(packet), MODE_QUOTE)
    if length == INDEX_FULL_PACKET_LEN:
        values = INDEX_FULL_LAYOUT.unpack_from(packet)
        tick = _index(values[:6], MODE_FULL)
        tick["exchange_timestamp"] = _time(values[6])
        return tick
    return None


def _index(values: tuple[int, ...], mode: str) -> Tick:
    token, last_price, high, low, open_, close = values
    divisor = price_divisor(token)
    last = last_price / divisor
    close_price = close / divisor
    return {
        "tradable": token & 0xFF != SEGMENT_INDICES,
        "mode": mode,
        "instrument_token": token,
        "last_price": last,
        "ohlc": {
            "high": high / divisor,
            "low": low / divisor,
            "open": open_ / divisor,
            "close": close_price,
        },
        "change": _change(last, close_price),
    }


def _quote(values: tuple[int, ...], mode: str = MODE_QUOTE) -> Tick:
    (token, last_price, last_qty, avg_price, volume, buy_qty, sell_qty) = values[:7]
    open_, high, low, close = values[7:11]
    divisor = price_divisor(token)
    last = last_price / divisor
    close_price = close / divisor
    return {
        "tradable": token & 0xFF != SEGMENT_INDICES,
        "mode": mode,
        "instrument_token": token,
        "last_price": last,
        "last_traded_quantity": last_qty,
        "average_traded_price": avg_price / divisor,
        "volume_traded": volume,
        "total_buy_quantity": buy_qty,
        "total_sell_quantity": sell_qty,
        "ohlc": {
            "open": open_ / divisor,
            "high": high / divisor,
            "low": low / divisor,
            "close": close_price,
        },
        "change": _change(last, close_price),
    }


def _full(values: tuple[int, ...]) -> Tick:
    tick = _quote(values, MODE_FULL)
    divisor = price_divisor(values[0])
    last_trade_time, oi, oi_day_high, oi_day_low, exchange_time = values[11:16]
    tick["last_trade_time"] = _time(last_trade_time)
    tick["oi"] = oi
    tick["oi_day_high"] = oi_day_high
    tick["oi_day_low"] = oi_day_low
    tick["exchange_timestamp"] = _time(exchange_time)
    levels = [
        {
            "quantity": values[i],
            "price": values[i + 1] / divisor,
            "orders": values[i + 2],
        }
        for i in range(16, 16 + 3 * 2 * DEPTH_LEVELS, 3)
    ]
    tick["depth"] = {"buy": levels[:DEPTH_LEVELS], "sell": levels[DEPTH_LEVELS:]}
    return tick


def _change(last_price: float, close: float) -> float:
    """Percent change from the previous close, as the official client computes it."""
    if close == 0:
        return 0
    return (last_price - close) * 100 / close


def _time(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, IST)

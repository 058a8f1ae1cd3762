"""Our frame parser against Kite's published samples and the official client's parser."""

import base64
import json
import struct
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from tests.conftest import SAMPLES_DIR
from ticker.errors import MalformedFrame
from ticker.ticks import parse_frame, parse_packet

SAMPLES = SAMPLES_DIR

# The sample JSONs predate the client's current field names (KITE-NOTES §2).
SAMPLE_FIELD_NAMES = {
    "last_quantity": "last_traded_quantity",
    "average_price": "average_traded_price",
    "volume": "volume_traded",
    "buy_quantity": "total_buy_quantity",
    "sell_quantity": "total_sell_quantity",
    "timestamp": "exchange_timestamp",
}
OFFICIAL = KiteTicker("api_key", "access_token")


def load_sample(name: str) -> tuple[bytes, dict]:
    packet = base64.b64decode((SAMPLES / f"{name}.packet").read_text())
    expected = json.loads((SAMPLES / f"{name}.json").read_text())
    return packet, {SAMPLE_FIELD_NAMES.get(k, k): v for k, v in expected.items()}


def frame_of(*packets: bytes) -> bytes:
    parts = [struct.pack(">H", len(packets))]
    for packet in packets:
        parts.append(struct.pack(">H", len(packet)) + packet)
    return b"".join(parts)


def comparable(tick: dict) -> dict:
    """Times as absolute instants: the official client returns naive local ones."""
    out = {}
    for key, value in tick.items():
        if isinstance(value, datetime):
            value = value.timestamp()
        elif isinstance(value, dict):
            value = comparable(value)
        out[key] = value
    return out


@pytest.mark.parametrize("name", ["ticker_full", "ticker_quote"])
def test_sample_packets_decode_to_their_published_values(name):
    packet, expected = load_sample(name)

    tick = parse_packet(packet)

    assert tick is not None
    for key, value in expected.items():
        if key == "change":
            continue  # the sample holds an absolute change; Kite's clients give percent
        if key in ("exchange_timestamp", "last_trade_time"):
            assert tick[key] == datetime.fromisoformat(value)
            assert tick[key].isoformat() == value
        else:
            assert tick[key] == value, key
    assert tick["change"] == pytest.approx(
        (expected["last_price"] - expected["ohlc"]["close"]) * 100
        / expected["ohlc"]["close"]
    )


def test_ltp_sample_values_decode_from_the_first_eight_bytes_of_a_packet():
    packet, _ = load_sample("ticker_quote")
    expected = json.loads((SAMPLES / "ticker_ltp.json").read_text())

    tick = parse_packet(packet[:8])

    assert tick == expected


def test_sample_frame_matches_the_official_parser():
    full, _ = load_sample("ticker_full")
    quote, _ = load_sample("ticker_quote")
    frame = frame_of(full, quote, quote[:8])

    assert [comparable(t) for t in parse_frame(frame)] == [
        comparable(t) for t in OFFICIAL._parse_binary(frame)
    ]


u32 = st.integers(0, 2**32 - 1)
tokens = st.builds(
    lambda high, segment: (high << 8) | segment,
    st.integers(0, 2**24 - 1),
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 12]),
)
# Times within the range datetime handles on every platform.
times = st.integers(0, 4_000_000_000)


@st.composite
def packets(draw):
    token = draw(tokens)
    kind = draw(st.sampled_from(["ltp", "index_quote", "index_full", "quote", "full"]))
    if kind == "ltp":
        return struct.pack(">II", token, draw(u32))
    if kind == "index_quote":
        return struct.pack(">7I", token, *draw(st.lists(u32, min_size=6, max_size=6)))
    if kind == "index_full":
        values = draw(st.lists(u32, min_size=6, max_size=6))
        return struct.pack(">8I", token, *values, draw(times))
    head = struct.pack(">11I", token, *draw(st.lists(u32, min_size=10, max_size=10)))
    if kind == "quote":
        return head
    tail = struct.pack(">I3II", draw(times), *draw(st.lists(u32, min_size=3, max_size=3)),
                       draw(times))
    depth = b"".join(
        struct.pack(">IIH", draw(u32), draw(u32), draw(st.integers(0, 65535))) + b"\0\0"
        for _ in range(10)
    )
    return head + tail + depth


# Hypothesis warns when the global random state moves during a draw; in a full run
# that is another test's reactor thread (Twisted's reconnect jitter), not this one.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@settings(max_examples=300, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=8))
def test_any_frame_decodes_exactly_as_the_official_parser_does(packet_list):
    frame = frame_of(*packet_list)

    ours = [comparable(t) for t in parse_frame(frame)]
    official = [comparable(t) for t in OFFICIAL._parse_binary(frame)]

    assert ours == official


def test_heartbeat_frame_holds_no_ticks():
    assert parse_frame(b"\x00") == []


def test_unknown_packet_length_is_skipped_like_the_official_client():
    ltp = struct.pack(">II", 408065, 157315)

    ticks = parse_frame(frame_of(b"\x01" * 12, ltp))

    assert [t["instrument_token"] for t in ticks] == [408065]


def test_truncated_frame_is_refused_with_the_lengths_at_fault():
    frame = frame_of(struct.pack(">II", 408065, 157315))[:-3]

    with pytest.raises(MalformedFrame, match="claims 8 bytes"):
        parse_frame(frame)

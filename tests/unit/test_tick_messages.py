"""The tick path's JSON writer against the parser: the same document for every packet."""

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_ticks import frame_of, load_sample, packets
from ticker.errors import MalformedFrame
from ticker.tick_messages import write_frame
from ticker.ticks import parse_frame


def as_parsed(frame: bytes) -> list[dict]:
    """What the publisher used to send: the parser's dicts through orjson."""
    return [json.loads(orjson.dumps(tick)) for tick in parse_frame(frame)]


def as_written(frame: bytes) -> list[dict]:
    return [json.loads(written.message) for written in write_frame(frame)]


def test_kites_sample_packets_are_written_as_the_parser_reads_them():
    full, _ = load_sample("ticker_full")
    quote, _ = load_sample("ticker_quote")
    frame = frame_of(full, quote, quote[:8])

    written = write_frame(frame)

    assert [json.loads(w.message) for w in written] == as_parsed(frame)
    assert [(w.instrument_token, w.last_price) for w in written] == [
        (t["instrument_token"], t["last_price"]) for t in parse_frame(frame)]
    # The exact text too, key order included, so a reader sees no difference at all.
    assert [w.message for w in written] == [orjson.dumps(t) for t in parse_frame(frame)]


@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@settings(max_examples=500, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=8))
def test_any_frame_is_written_as_the_same_json_the_parser_gives(packet_list):
    frame = frame_of(*packet_list)

    # Equal as JSON, every float to the bit; only the spelling of extreme exponents
    # (1e-07 against 1e-7) may differ from orjson's.
    assert as_written(frame) == as_parsed(frame)


def test_heartbeats_and_unknown_packets_write_nothing():
    assert write_frame(b"\x00") == []
    assert write_frame(frame_of(b"\x01" * 12)) == []


def test_a_truncated_frame_is_refused_as_the_parser_refuses_it():
    frame = frame_of(b"\x00\x06\x3a\x01\x00\x02\x66\x83")[:-3]

    with pytest.raises(MalformedFrame, match="claims 8 bytes"):
        write_frame(frame)

"""The simulator's packets, read back by the official client's own parser."""

from __future__ import annotations

import base64
from datetime import datetime

import pytest
from kiteconnect import KiteTicker

from tests.conftest import SAMPLES_DIR
from ticker.simulator import packets
from ticker.simulator.packets import EMPTY_LEVEL, DepthLevel

SAMPLES = SAMPLES_DIR

NSE_TOKEN = 408065  # INFY, segment 1
NFO_TOKEN = 13660418  # segment 2
CDS_TOKEN = 412675  # segment 3
BCD_TOKEN = 1 << 8 | 6
NCO_TOKEN = 2 << 8 | 12
MCX_TOKEN = 3 << 8 | 7
INDEX_TOKEN = 256265  # NIFTY 50, segment 9


@pytest.fixture
def parse():
    return KiteTicker("k", "t")._parse_binary


def full_fields(token: int) -> dict:
    return {
        "token": token,
        "last_price": 157_370,
        "last_quantity": 7,
        "average_price": 157_037,
        "volume": 1_192_471,
        "buy_quantity": 256_443,
        "sell_quantity": 363_009,
        "open_": 156_915,
        "high": 157_500,
        "low": 156_105,
        "close": 156_780,
        "last_trade_time": 1_625_461_887,
        "oi": 12_000,
        "oi_day_high": 13_500,
        "oi_day_low": 11_250,
        "exchange_timestamp": 1_625_461_888,
        "bids": [DepthLevel(10 * i, 157_370 - 5 * i, i) for i in range(1, 6)],
        "asks": [DepthLevel(20 * i, 157_370 + 5 * i, 2 * i) for i in range(1, 6)],
    }


@pytest.mark.parametrize(
    ("token", "divisor"),
    [
        (NSE_TOKEN, 100),
        (NFO_TOKEN, 100),
        (CDS_TOKEN, 10_000_000),
        (BCD_TOKEN, 10_000),
        (NCO_TOKEN, 10_000),
        (MCX_TOKEN, 100),
        (INDEX_TOKEN, 100),
    ],
)
def test_ltp_packet_reads_back_with_the_segment_divisor(parse, token, divisor):
    assert packets.price_divisor(token) == divisor

    [tick] = parse(packets.frame([packets.ltp_packet(token, 832_512_345)]))

    assert tick["mode"] == "ltp"
    assert tick["instrument_token"] == token
    assert tick["last_price"] == 832_512_345 / divisor
    assert tick["tradable"] is (token != INDEX_TOKEN)


def test_quote_packet_reads_back_every_field(parse):
    packet = packets.quote_packet(
        NFO_TOKEN,
        12_345,
        75,
        12_300,
        450_000,
        9_000,
        8_250,
        12_000,
        12_500,
        11_900,
        12_100,
    )

    [tick] = parse(packets.frame([packet]))

    assert len(packet) == packets.QUOTE_PACKET_LEN == 44
    assert tick == {
        "tradable": True,
        "mode": "quote",
        "instrument_token": NFO_TOKEN,
        "last_price": 123.45,
        "last_traded_quantity": 75,
        "average_traded_price": 123.0,
        "volume_traded": 450_000,
        "total_buy_quantity": 9_000,
        "total_sell_quantity": 8_250,
        "ohlc": {"open": 120.0, "high": 125.0, "low": 119.0, "close": 121.0},
        "change": (123.45 - 121.0) * 100 / 121.0,
    }


def test_full_packet_reads_back_every_field_and_the_depth(parse):
    fields = full_fields(NFO_TOKEN)

    packet = packets.full_packet(**fields)
    [tick] = parse(packets.frame([packet]))

    assert len(packet) == packets.FULL_PACKET_LEN == 184
    assert tick["mode"] == "full"
    assert tick["last_price"] == 1573.70
    assert tick["last_traded_quantity"] == 7
    assert tick["average_traded_price"] == 1570.37
    assert tick["volume_traded"] == 1_192_471
    assert tick["total_buy_quantity"] == 256_443
    assert tick["total_sell_quantity"] == 363_009
    assert tick["ohlc"] == {
        "open": 1569.15,
        "high": 1575.0,
        "low": 1561.05,
        "close": 1567.8,
    }
    assert tick["last_trade_time"] == datetime.fromtimestamp(1_625_461_887)
    assert tick["exchange_timestamp"] == datetime.fromtimestamp(1_625_461_888)
    assert (tick["oi"], tick["oi_day_high"], tick["oi_day_low"]) == (
        12_000,
        13_500,
        11_250,
    )
    assert tick["depth"]["buy"] == [
        {"quantity": 10 * i, "price": (157_370 - 5 * i) / 100, "orders": i}
        for i in range(1, 6)
    ]
    assert tick["depth"]["sell"] == [
        {"quantity": 20 * i, "price": (157_370 + 5 * i) / 100, "orders": 2 * i}
        for i in range(1, 6)
    ]


def test_full_packet_in_cds_scales_prices_by_ten_million(parse):
    fields = full_fields(CDS_TOKEN)
    fields["last_price"] = 832_525_000
    fields["bids"] = [DepthLevel(1, 832_500_000, 1), *[EMPTY_LEVEL] * 4]

    [tick] = parse(packets.frame([packets.full_packet(**fields)]))

    assert tick["last_price"] == 83.2525
    assert tick["depth"]["buy"][0] == {"quantity": 1, "price": 83.25, "orders": 1}
    assert tick["depth"]["buy"][1] == {"quantity": 0, "price": 0.0, "orders": 0}


def test_full_packet_rebuilds_kites_own_sample_byte_for_byte():
    sample = base64.b64decode((SAMPLES / "ticker_full.packet").read_text())
    tick = KiteTicker("k", "t")._parse_binary(packets.frame([sample]))[0]

    def units(price: float) -> int:
        return round(price * 100)

    rebuilt = packets.full_packet(
        token=tick["instrument_token"],
        last_price=units(tick["last_price"]),
        last_quantity=tick["last_traded_quantity"],
        average_price=units(tick["average_traded_price"]),
        volume=tick["volume_traded"],
        buy_quantity=tick["total_buy_quantity"],
        sell_quantity=tick["total_sell_quantity"],
        open_=units(tick["ohlc"]["open"]),
        high=units(tick["ohlc"]["high"]),
        low=units(tick["ohlc"]["low"]),
        close=units(tick["ohlc"]["close"]),
        last_trade_time=int(tick["last_trade_time"].timestamp()),
        oi=tick["oi"],
        oi_day_high=tick["oi_day_high"],
        oi_day_low=tick["oi_day_low"],
        exchange_timestamp=int(tick["exchange_timestamp"].timestamp()),
        bids=[
            DepthLevel(d["quantity"], units(d["price"]), d["orders"])
            for d in tick["depth"]["buy"]
        ],
        asks=[
            DepthLevel(d["quantity"], units(d["price"]), d["orders"])
            for d in tick["depth"]["sell"]
        ],
    )

    assert rebuilt == sample


def test_index_quote_packet_uses_the_index_ohlc_order(parse):
    packet = packets.index_quote_packet(
        INDEX_TOKEN, 2_401_000, 2_405_000, 2_390_000, 2_395_000, 2_400_000
    )

    [tick] = parse(packets.frame([packet]))

    assert len(packet) == packets.INDEX_QUOTE_PACKET_LEN == 28
    assert tick == {
        "tradable": False,
        "mode": "quote",
        "instrument_token": INDEX_TOKEN,
        "last_price": 24010.0,
        "ohlc": {"high": 24050.0, "low": 23900.0, "open": 23950.0, "close": 24000.0},
        "change": (24010.0 - 24000.0) * 100 / 24000.0,
    }


def test_index_full_packet_adds_the_exchange_timestamp(parse):
    packet = packets.index_full_packet(
        INDEX_TOKEN,
        2_399_000,
        2_405_000,
        2_390_000,
        2_395_000,
        2_400_000,
        1_700_000_000,
    )

    [tick] = parse(packets.frame([packet]))

    assert len(packet) == packets.INDEX_FULL_PACKET_LEN == 32
    assert tick["mode"] == "full"
    assert tick["last_price"] == 23990.0
    assert tick["ohlc"] == {
        "high": 24050.0,
        "low": 23900.0,
        "open": 23950.0,
        "close": 24000.0,
    }
    assert tick["exchange_timestamp"] == datetime.fromtimestamp(1_700_000_000)


def test_one_frame_carries_packets_of_every_kind_in_order(parse):
    frame = packets.frame(
        [
            packets.ltp_packet(NSE_TOKEN, 157_315),
            packets.index_quote_packet(INDEX_TOKEN, 1, 2, 3, 4, 5),
            packets.full_packet(**full_fields(NFO_TOKEN)),
            packets.quote_packet(CDS_TOKEN, *range(10)),
            packets.index_full_packet(INDEX_TOKEN, 1, 2, 3, 4, 5, 6),
        ]
    )

    ticks = parse(frame)

    assert len(frame) == 2 + 5 * 2 + 8 + 28 + 184 + 44 + 32
    assert [(t["instrument_token"], t["mode"]) for t in ticks] == [
        (NSE_TOKEN, "ltp"),
        (INDEX_TOKEN, "quote"),
        (NFO_TOKEN, "full"),
        (CDS_TOKEN, "quote"),
        (INDEX_TOKEN, "full"),
    ]
    assert ticks[0]["last_price"] == 1573.15


def test_an_empty_frame_holds_no_packets(parse):
    assert packets.frame([]) == b"\x00\x00"
    assert parse(packets.frame([])) == []


def test_heartbeat_is_one_byte_that_the_client_ignores(parse):
    assert packets.HEARTBEAT == b"\x00"
    assert parse(packets.HEARTBEAT) == []


def test_full_packet_refuses_a_short_depth():
    fields = full_fields(NFO_TOKEN)
    fields["asks"] = fields["asks"][:4]

    with pytest.raises(ValueError, match="5 bids and 5 asks"):
        packets.full_packet(**fields)

"""Simulated prices: plausible, consistent, bounded and reproducible."""

from __future__ import annotations

from datetime import date

import pytest
from kiteconnect import KiteTicker

from ticker.simulator import chain
from ticker.simulator.clock import TickClock
from ticker.simulator.market import Market

NOW = 1_700_000_000
CALL = 13660418
PUT = 13660674
FUTURE = 14483714
INDEX = 256265
MODES = {CALL: "full", PUT: "quote", FUTURE: "full", INDEX: "full"}


@pytest.fixture(scope="module")
def universe():
    return chain.nifty_universe(date(2025, 12, 3))


@pytest.fixture
def parse():
    return KiteTicker("k", "t")._parse_binary


def run(market: Market, modes: dict[int, str], cycles: int, parse) -> list[list[dict]]:
    return [parse(market.frame(modes, cycle)) for cycle in range(1, cycles + 1)]


def test_same_seed_gives_the_same_ticks(universe, parse):
    first = run(Market(universe, seed=7, clock=lambda: NOW), MODES, 50, parse)
    again = run(Market(universe, seed=7, clock=lambda: NOW), MODES, 50, parse)
    other = run(Market(universe, seed=8, clock=lambda: NOW), MODES, 50, parse)

    assert first == again
    assert first != other


def test_prices_stay_consistent_over_many_cycles(universe, parse):
    market = Market(universe, seed=1, clock=lambda: NOW)
    previous: dict[int, dict] = {}

    for ticks in run(market, MODES, 600, parse):
        assert [t["instrument_token"] for t in ticks] == list(MODES)
        for tick in ticks:
            token, price, ohlc = (
                tick["instrument_token"],
                tick["last_price"],
                tick["ohlc"],
            )
            assert price > 0
            assert ohlc["low"] <= price <= ohlc["high"]
            assert ohlc["low"] <= ohlc["open"] <= ohlc["high"]
            assert round(price * 100) % 5 == 0, "off the 0.05 tick grid"
            if tick["tradable"]:
                assert tick["last_traded_quantity"] % 75 == 0
                assert (
                    tick["volume_traded"] >= previous.get(token, tick)["volume_traded"]
                )
            previous[token] = tick


def test_full_ticks_carry_depth_around_the_last_price_and_open_interest(
    universe, parse
):
    market = Market(universe, seed=2, clock=lambda: NOW)

    for ticks in run(market, {CALL: "full", FUTURE: "full"}, 100, parse):
        for tick in ticks:
            bids, asks = tick["depth"]["buy"], tick["depth"]["sell"]
            assert len(bids) == len(asks) == 5
            live_bids = [b["price"] for b in bids if b["quantity"]]
            assert live_bids == sorted(live_bids, reverse=True)
            assert all(p < tick["last_price"] for p in live_bids)
            assert [a["price"] for a in asks] == sorted(a["price"] for a in asks)
            assert asks[0]["price"] > tick["last_price"]
            assert tick["oi_day_low"] <= tick["oi"] <= tick["oi_day_high"]
            assert tick["exchange_timestamp"].timestamp() == NOW


def test_the_walk_stays_within_its_band(universe, parse):
    market = Market(universe, seed=3, clock=lambda: NOW)
    modes = {CALL: "ltp", INDEX: "quote"}
    close = {
        t["instrument_token"]: t["ohlc"]["close"]
        for t in parse(market.frame({INDEX: "quote"}, 0))
    }
    call_start = universe.get(CALL).last_price

    for cycle in range(1, 5000):
        market.frame(modes, cycle)
    [call, index] = parse(market.frame(modes, 5000))

    assert 0.5 * call_start - 0.05 <= call["last_price"] <= 1.5 * call_start + 0.05
    assert 0.9 * close[INDEX] <= index["last_price"] <= 1.1 * close[INDEX]


def test_index_packets_follow_the_mode(universe):
    market = Market(universe, clock=lambda: NOW)

    sizes = {
        mode: len(market.packet(INDEX, mode, 1)) for mode in ("ltp", "quote", "full")
    }

    assert sizes == {"ltp": 8, "quote": 28, "full": 32}


def test_a_token_moves_once_per_cycle_however_many_connections_stream_it(universe):
    market = Market(universe, clock=lambda: NOW)

    first = market.frame({CALL: "full", PUT: "ltp"}, 5)
    second = market.frame({CALL: "full", PUT: "ltp"}, 5)

    assert first == second
    assert market.packet(CALL, "full", 5) == first[4 : 4 + 184]
    assert market.packet(CALL, "full", 6) != first[4 : 4 + 184]


def test_a_token_outside_the_universe_is_an_error(universe):
    with pytest.raises(KeyError, match="123"):
        Market(universe).packet(123, "ltp", 1)


def test_the_clock_numbers_cycles_of_the_interval():
    now = [10.05]
    clock = TickClock(0.1, now=lambda: now[0])

    cycle = clock.next_cycle()

    assert cycle == 101
    assert clock.seconds_until(cycle) == pytest.approx(0.05)
    now[0] = 10.2
    assert clock.seconds_until(cycle) < 0
    with pytest.raises(ValueError):
        TickClock(0)

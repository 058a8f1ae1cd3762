"""The generated NIFTY chain and Kite's instruments CSV."""

from __future__ import annotations

import itertools
import re
from datetime import date, timedelta

import pytest
from kiteconnect import KiteConnect

from tests.conftest import SAMPLES_DIR
from ticker.errors import ConfigInvalid
from ticker.simulator import chain
from ticker.simulator.universe import Universe, load_universe, parse_csv

SAMPLE_DUMP = SAMPLES_DIR / "instruments_all.csv"
WEEKLY = re.compile(r"^NIFTY(\d\d)([1-9OND])(\d\d)(\d+)(CE|PE)$")
MONTHLY = re.compile(
    r"^NIFTY(\d\d)(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)(\d+)(CE|PE)$"
)

# A Wednesday, a Tuesday (its own expiry day), a day whose nearest Tuesday is the
# month's last, and one in a year with a January weekly.
DATES = [date(2025, 12, 3), date(2025, 12, 9), date(2025, 12, 24), date(2027, 1, 1)]


def parse_csv_like_kite(body: bytes) -> list[dict]:
    return KiteConnect("k")._parse_instruments(body)


@pytest.mark.parametrize("today", DATES)
def test_token_13660418_is_the_nearest_expirys_24000_call(today):
    universe = Universe(chain.nifty_chain(today))

    option = universe.get(13660418)

    assert option is not None
    nearest = min(i.expiry for i in universe if i.segment == "NFO-OPT")
    assert option.exchange_token == 53361
    assert option.expiry == nearest
    assert today <= option.expiry < today + timedelta(days=7)
    assert option.expiry.weekday() == 1  # Tuesday
    assert (option.name, option.strike, option.instrument_type) == (
        "NIFTY",
        24000.0,
        "CE",
    )
    assert (option.segment, option.exchange) == ("NFO-OPT", "NFO")
    assert (option.lot_size, option.tick_size) == (75, 0.05)
    assert option.last_price > 0


def test_tokens_are_the_same_whatever_the_date():
    token_lists = [[i.instrument_token for i in chain.nifty_chain(d)] for d in DATES]

    assert all(tokens == token_lists[0] for tokens in token_lists)
    assert len(set(token_lists[0])) == len(token_lists[0])


def test_option_tokens_pack_the_exchange_token_and_the_nfo_segment():
    for instrument in chain.nifty_chain(DATES[0]):
        if instrument.exchange == "NFO":
            assert instrument.instrument_token == instrument.exchange_token << 8 | 2


def test_the_index_row_is_listed_as_kite_lists_it():
    index = Universe(chain.nifty_chain(DATES[0])).get(256265)

    assert index is not None
    assert index.exchange_token == 1001
    assert index.tradingsymbol == "NIFTY 50"
    assert (index.segment, index.exchange, index.instrument_type) == (
        "INDICES",
        "NSE",
        "EQ",
    )


def test_chain_spans_several_tuesday_expiries_and_strikes_around_24000():
    options = [i for i in chain.nifty_chain(DATES[0]) if i.segment == "NFO-OPT"]

    expiries = sorted({i.expiry for i in options})
    strikes = sorted({i.strike for i in options})
    assert len(expiries) >= 4
    assert all(e.weekday() == 1 for e in expiries)
    assert [b - a for a, b in itertools.pairwise(expiries)] == [timedelta(days=7)] * (
        len(expiries) - 1
    )
    assert strikes[0] <= 24000 - 30 * 50 and strikes[-1] >= 24000 + 30 * 50
    assert {b - a for a, b in itertools.pairwise(strikes)} == {50.0}
    assert len(options) == len(expiries) * len(strikes) * 2


def test_tradingsymbols_follow_kites_weekly_and_monthly_formats():
    for instrument in chain.nifty_chain(DATES[0]):
        if instrument.segment != "NFO-OPT":
            continue
        expiry = instrument.expiry
        month_end = (expiry + timedelta(days=7)).month != expiry.month
        match = (MONTHLY if month_end else WEEKLY).match(instrument.tradingsymbol)
        assert match, instrument.tradingsymbol
        assert int(match.group(1)) == expiry.year % 100
        assert match.groups()[-2:] == (
            str(int(instrument.strike)),
            instrument.instrument_type,
        )
        if not month_end:
            assert match.group(2) == "123456789OND"[expiry.month - 1]
            assert int(match.group(3)) == expiry.day


@pytest.mark.parametrize(
    ("expiry", "symbol"),
    [
        (date(2025, 12, 9), "NIFTY25D0924000CE"),
        (date(2025, 12, 30), "NIFTY25DEC24000CE"),
        (date(2025, 10, 7), "NIFTY25O0724000CE"),
        (date(2026, 1, 6), "NIFTY2610624000CE"),
        (date(2026, 1, 27), "NIFTY26JAN24000CE"),
    ],
)
def test_option_symbol_examples(expiry, symbol):
    assert chain.option_symbol(expiry, 24000, "CE") == symbol


def test_futures_are_monthly_and_named_like_kites():
    futures = [i for i in chain.nifty_chain(DATES[0]) if i.segment == "NFO-FUT"]

    assert [f.tradingsymbol for f in futures] == [
        "NIFTY25DECFUT",
        "NIFTY26JANFUT",
        "NIFTY26FEBFUT",
    ]
    assert [f.expiry for f in futures] == [
        date(2025, 12, 30),
        date(2026, 1, 27),
        date(2026, 2, 24),
    ]


def test_generated_csv_round_trips_through_the_official_client():
    universe = Universe(chain.nifty_chain(DATES[0]))

    rows = parse_csv_like_kite(universe.csv())

    assert len(rows) == len(universe)
    for row, instrument in zip(rows, universe):
        assert row["instrument_token"] == instrument.instrument_token
        assert row["exchange_token"] == str(instrument.exchange_token)
        assert row["tradingsymbol"] == instrument.tradingsymbol
        assert row["name"] == instrument.name
        assert row["last_price"] == instrument.last_price
        assert row["expiry"] == (instrument.expiry or "")
        assert row["strike"] == instrument.strike
        assert row["tick_size"] == instrument.tick_size
        assert row["lot_size"] == instrument.lot_size
        assert row["instrument_type"] == instrument.instrument_type
        assert (row["segment"], row["exchange"]) == (
            instrument.segment,
            instrument.exchange,
        )


def test_csv_for_one_exchange_holds_only_its_rows():
    universe = Universe(chain.nifty_chain(DATES[0]))

    nse = parse_csv_like_kite(universe.csv("NSE"))
    nfo = parse_csv_like_kite(universe.csv("nfo"))

    assert [r["instrument_token"] for r in nse] == [256265]
    assert len(nfo) == len(universe) - 1
    assert {r["exchange"] for r in nfo} == {"NFO"}
    assert parse_csv_like_kite(universe.csv("MCX")) == []


def test_a_loaded_kite_dump_is_served_byte_for_byte():
    universe = load_universe(SAMPLE_DUMP)

    assert universe.csv() == SAMPLE_DUMP.read_bytes()
    assert parse_csv_like_kite(universe.csv()) == parse_csv_like_kite(
        SAMPLE_DUMP.read_bytes()
    )
    assert 12073986 in universe
    assert universe.get(12073986).tradingsymbol == "BANKNIFTY18JAN23500CE"


def test_a_csv_without_kites_columns_is_refused():
    with pytest.raises(ConfigInvalid, match="lacks columns"):
        parse_csv("token,symbol\n1,ABC\n")


def test_a_csv_with_a_bad_number_names_the_line():
    header = SAMPLE_DUMP.read_text().splitlines()[0]
    with pytest.raises(ConfigInvalid, match="line 2"):
        parse_csv(header + "\nnot-a-number,1,X,X,0.0,,0.0,0.05,1,EQ,NSE,NSE\n")

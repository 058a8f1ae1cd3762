"""Client commands and the subscription table they change, as Kite applies them."""

from __future__ import annotations

import json

import pytest

from ticker.simulator.subscriptions import (
    Command,
    InvalidCommand,
    Subscriptions,
    parse_command,
)

KNOWN = {101, 102, 103, 104, 105}


def command(action: str, value: object) -> Command:
    # The official client's spelling: json.dumps with default separators.
    return parse_command(json.dumps({"a": action, "v": value}))


def test_subscribed_tokens_stream_in_quote_mode():
    table = Subscriptions(limit=10, known=KNOWN)

    error = table.apply(command("subscribe", [101, 102]))

    assert error is None
    assert table.modes == {101: "quote", 102: "quote"}


def test_mode_changes_subscribed_tokens_and_subscribes_new_ones():
    table = Subscriptions(limit=10, known=KNOWN)
    table.apply(command("subscribe", [101]))

    table.apply(command("mode", ["full", [101, 102]]))

    assert table.modes == {101: "full", 102: "full"}


def test_subscribing_again_resets_the_mode_to_quote():
    table = Subscriptions(limit=10, known=KNOWN)
    table.apply(command("mode", ["ltp", [101]]))

    table.apply(command("subscribe", [101]))

    assert table.modes == {101: "quote"}


def test_unknown_and_non_integer_tokens_are_ignored_silently():
    table = Subscriptions(limit=10, known=KNOWN)

    error = table.apply(command("subscribe", [101, 999, "102", True, 1.5, None]))

    assert error is None
    assert table.modes == {101: "quote"}


def test_unsubscribe_removes_tokens_and_ignores_absent_ones():
    table = Subscriptions(limit=10, known=KNOWN)
    table.apply(command("subscribe", [101, 102]))

    error = table.apply(command("unsubscribe", [102, 103, 999]))

    assert error is None
    assert table.modes == {101: "quote"}


def test_tokens_past_the_limit_are_refused_with_kites_message():
    table = Subscriptions(limit=3, known=KNOWN)
    table.apply(command("subscribe", [101]))

    error = table.apply(command("subscribe", [102, 103, 104, 105]))

    assert error == "Can't subscribe to more than 3 instruments."
    assert list(table.modes) == [101, 102, 103]


def test_mode_counts_against_the_limit_too():
    table = Subscriptions(limit=2, known=KNOWN)
    table.apply(command("subscribe", [101, 102]))

    error = table.apply(command("mode", ["full", [101, 103]]))

    assert error == "Can't subscribe to more than 2 instruments."
    assert table.modes == {101: "full", 102: "quote"}


def test_a_full_table_still_accepts_mode_changes_of_its_own_tokens():
    table = Subscriptions(limit=2, known=KNOWN)
    table.apply(command("subscribe", [101, 102]))

    assert table.apply(command("mode", ["ltp", [102]])) is None
    assert table.apply(command("subscribe", [101])) is None
    assert table.modes == {101: "quote", 102: "ltp"}


def test_repeated_tokens_in_one_message_count_once():
    assert command("subscribe", [101, 101, 102, 101]).tokens == (101, 102)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        b"\xff\xfe",
        "[1, 2]",
        '{"a": "subscribe"}',
        '{"a": "subscribe", "v": 101}',
        '{"a": "resubscribe", "v": [101]}',
        '{"v": [101]}',
        '{"a": "mode", "v": ["full"]}',
        '{"a": "mode", "v": ["full", 101]}',
        '{"a": "mode", "v": ["fast", [101]]}',
    ],
)
def test_anything_but_the_three_commands_is_invalid(text):
    with pytest.raises(InvalidCommand, match="Invalid"):
        parse_command(text)

"""Per token, events follow the order requests were accepted, even when they race."""

from __future__ import annotations

import time

import pytest
import requests

from tests.e2e.test_subscriptions import event_for, nfo_tokens, subscribe, unsubscribe
from tests.e2e.test_workers import socket_subscriptions
from tests.listen import ChannelListener
from ticker.accounts import load_accounts
from ticker.config import EXAMPLE_ACCOUNTS_FILE

SETTLE_TIMEOUT_S = 20.0
MODES = ["LTP", "QUOTE", "FULL"]


def lifecycle(events: ChannelListener, token: int) -> list[dict]:
    return events.matching(lambda m: m["instrument_token"] == token
                           and m["event_type"].startswith("subscription_"))


def replay_states(announced: list[dict]) -> str | None:
    """The socket mode the events describe, failing on an impossible step."""
    mode = None
    for event in announced:
        kind = event["event_type"]
        steps = [e["event_type"] for e in announced]
        if kind == "subscription_created":
            assert mode is None, f"created while live: {steps}"
        else:
            assert mode is not None, f"{kind} while not live: {steps}"
        mode = None if kind == "subscription_removed" else event["metadata"]["requested_mode"]
    return mode


def on_socket(stack, account_id: str, token: int) -> str | None:
    api_key = load_accounts(EXAMPLE_ACCOUNTS_FILE).get(account_id).api_key
    return socket_subscriptions(stack, api_key).get(str(token))


def wait_settled(stack, events, token: int, status: str) -> dict:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        row = requests.get(f"{stack.api}/subscriptions/{token}", timeout=5).json()
        if row["status"] == status:
            return row
        assert time.monotonic() < deadline, f"token {token} still {row['status']}"
        time.sleep(0.2)


def test_a_post_then_an_immediate_delete_ends_removed_created_first(stack):
    [token] = nfo_tokens(stack, 1, skip=960)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        account = subscribe(stack, token, "QUOTE").json()["account_id"]
        assert unsubscribe(stack, token).status_code == 202
        events.wait_for(event_for(token, "subscription_removed"), SETTLE_TIMEOUT_S)
        wait_settled(stack, events, token, "removed")
        time.sleep(1.0)  # room for a late, wrongly ordered event to show

    announced = lifecycle(events, token)
    assert [e["event_type"] for e in announced] == [
        "subscription_created", "subscription_removed"]
    assert announced[1]["sequence"] > announced[0]["sequence"]
    assert on_socket(stack, account, token) is None


@pytest.mark.parametrize("last", ["subscribe", "unsubscribe"])
def test_fifty_rapid_toggles_end_in_the_last_requested_state(stack, last):
    [token] = nfo_tokens(stack, 1, skip=970 if last == "subscribe" else 971)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        account = None
        for i in range(50 if last == "unsubscribe" else 51):
            if i % 2 == 0:
                answer = subscribe(stack, token, MODES[(i // 2) % 3])
                assert answer.status_code in (200, 202), answer.text
                account = answer.json()["account_id"]
            else:
                assert unsubscribe(stack, token).status_code == 202
        final_mode = MODES[(50 // 2) % 3] if last == "subscribe" else None
        row = wait_settled(stack, events, token,
                           "active" if final_mode else "removed")
        if final_mode:
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while row["applied_mode"] != final_mode:
                assert time.monotonic() < deadline, row
                time.sleep(0.2)
                row = requests.get(f"{stack.api}/subscriptions/{token}", timeout=5).json()
        time.sleep(1.0)  # room for a late, wrongly ordered event to show

    announced = lifecycle(events, token)
    assert replay_states(announced) == final_mode
    sequences = [e["sequence"] for e in announced]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert on_socket(stack, account, token) == (final_mode.lower() if final_mode else None)
    if final_mode:
        unsubscribe(stack, token)

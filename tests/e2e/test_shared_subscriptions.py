"""Several back ends share an instrument: it streams while any holds it, in the highest mode."""

from __future__ import annotations

import requests

from tests.e2e.test_event_order import on_socket, wait_settled
from tests.e2e.test_subscriptions import EVENT_TIMEOUT_S, event_for, nfo_tokens
from tests.listen import ChannelListener


def post(stack, token: int, mode: str, client_id: str) -> requests.Response:
    return requests.post(f"{stack.api}/subscriptions", timeout=10, json={
        "instrument_token": token, "requested_mode": mode, "client_id": client_id})


def leave(stack, token: int, client_id: str) -> requests.Response:
    return requests.delete(f"{stack.api}/subscriptions/{token}",
                           params={"client_id": client_id}, timeout=10)


def patch(stack, token: int, mode: str, client_id: str) -> requests.Response:
    return requests.patch(f"{stack.api}/subscriptions/{token}", timeout=10,
                          json={"requested_mode": mode, "client_id": client_id})


def test_two_back_ends_share_a_token_and_one_leaving_keeps_the_others_ticks(stack):
    [token] = nfo_tokens(stack, 1, skip=980)
    with ChannelListener(stack.redis_url, stack.events_channel) as events, \
            ChannelListener(stack.redis_url, stack.ticks_channel) as ticks:
        first = post(stack, token, "LTP", "desk-a")
        assert first.status_code == 202, first.text
        account = first.json()["account_id"]
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)

        # A second desk asks for more: the socket follows the highest mode.
        joined = post(stack, token, "FULL", "desk-b")
        assert joined.status_code == 202, joined.text
        assert {(r["client_id"], r["requested_mode"]) for r in joined.json()["requesters"]} \
            == {("desk-a", "LTP"), ("desk-b", "FULL")}
        [updated] = events.wait_for(event_for(token, "subscription_updated"), EVENT_TIMEOUT_S)
        assert (updated["metadata"]["requested_mode"], updated["metadata"]["previous_mode"]) \
            == ("FULL", "LTP")

        # The desk that asked for FULL leaves: the other keeps streaming, in LTP.
        assert leave(stack, token, "desk-b").status_code == 202
        events.wait_for(event_for(token, "subscription_updated"), EVENT_TIMEOUT_S, count=2)
        ticks.wait_for(lambda t: t["instrument_token"] == token and t["mode"] == "ltp",
                       5.0, count=len(ticks.matching(
                           lambda t: t["instrument_token"] == token and t["mode"] == "ltp")) + 1)
        assert on_socket(stack, account, token) == "ltp"
        assert not events.matching(event_for(token, "subscription_removed"))

        # A requester changes its own mode in place.
        assert patch(stack, token, "QUOTE", "desk-a").status_code == 202
        events.wait_for(event_for(token, "subscription_updated"), EVENT_TIMEOUT_S, count=3)
        assert on_socket(stack, account, token) == "quote"

        # The last one out takes it off the socket.
        assert leave(stack, token, "desk-a").status_code == 202
        events.wait_for(event_for(token, "subscription_removed"), EVENT_TIMEOUT_S)
    wait_settled(stack, events, token, "removed")
    assert on_socket(stack, account, token) is None
    assert len(events.matching(event_for(token, "subscription_created"))) == 1


def test_a_desk_cannot_remove_or_change_what_it_does_not_hold(stack):
    [token] = nfo_tokens(stack, 1, skip=981)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        assert post(stack, token, "QUOTE", "desk-a").status_code == 202
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)

        refused_delete = leave(stack, token, "desk-b")
        refused_patch = patch(stack, token, "FULL", "desk-b")
        same_again = post(stack, token, "QUOTE", "desk-a")

    assert refused_delete.status_code == refused_patch.status_code == 404
    assert "desk-b" in refused_delete.json()["error"]["message"]
    assert same_again.status_code == 200
    row = requests.get(f"{stack.api}/subscriptions/{token}", timeout=5).json()
    assert (row["status"], row["requested_mode"]) == ("active", "QUOTE")
    assert leave(stack, token, "desk-a").status_code == 202

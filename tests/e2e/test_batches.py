"""Batches and symbols: one POST for many instruments, instruments named as people name them."""

from __future__ import annotations

import requests
from kiteconnect import KiteConnect

from tests.e2e.test_event_order import wait_settled
from tests.e2e.test_subscriptions import EVENT_TIMEOUT_S, event_for, nfo_tokens
from tests.listen import ChannelListener

UNKNOWN_TOKEN = 4294967295


def nfo_rows(stack, count: int, skip: int) -> list[dict]:
    kite = KiteConnect("simkey_a", access_token="simtoken_a", root=stack.sim_rest)
    wanted = set(nfo_tokens(stack, count, skip))
    return [row for row in kite.instruments("NFO") if row["instrument_token"] in wanted]


def post_batch(stack, body: dict) -> requests.Response:
    return requests.post(f"{stack.api}/subscriptions/batch", json=body, timeout=30)


def subscribe_messages(stack, tokens: set[int]) -> list[list[int]]:
    """Each subscribe frame the simulator received that names any of `tokens`."""
    found = []
    for connection in requests.get(f"{stack.sim_rest}/_sim/connections", timeout=5).json():
        for message in connection["messages"]:
            payload = message.get("message", message)
            if payload.get("a") == "subscribe" and tokens & set(payload.get("v", [])):
                found.append(payload["v"])
    return found


def leave_all(stack, tokens, client_id: str) -> None:
    for token in tokens:
        answer = requests.delete(f"{stack.api}/subscriptions/{token}",
                                 params={"client_id": client_id}, timeout=10)
        assert answer.status_code == 202, answer.text


def test_a_batch_is_answered_item_by_item_and_reaches_kite_as_lists(stack):
    rows = nfo_rows(stack, 40, skip=1000)
    tokens = [row["instrument_token"] for row in rows]
    by_symbol = rows[-1]
    items = [{"instrument_token": token} for token in tokens[:-1]]
    items += [
        {"tradingsymbol": by_symbol["tradingsymbol"].lower(), "exchange": "nfo",
         "requested_mode": "LTP"},
        {"instrument_token": UNKNOWN_TOKEN},
        {"instrument_token": tokens[0]},  # named twice
    ]

    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        answer = post_batch(stack, {"instruments": items, "requested_mode": "FULL",
                                    "client_id": "desk-batch"})
        assert answer.status_code == 202, answer.text
        body = answer.json()
        for token in tokens:
            events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)

    assert (body["queued"], body["unchanged"], body["refused"]) == (40, 0, 2)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["instrument_token"] for r in results[:40]] == tokens
    assert results[39]["subscription"]["requested_mode"] == "LTP"
    assert {r["subscription"]["requested_mode"] for r in results[:39]} == {"FULL"}
    assert all(r["subscription"]["requesters"] == [
        {"client_id": "desk-batch", "requested_mode": r["subscription"]["requested_mode"]}]
        for r in results[:40])
    unknown, duplicate = results[40], results[41]
    assert (unknown["outcome"], unknown["error"]["code"], unknown["error"]["field"]) == (
        "refused", "unknown_instrument", "instruments.40.instrument_token")
    assert (duplicate["outcome"], duplicate["error"]["code"]) == (
        "refused", "duplicate_instrument")
    assert requests.get(f"{stack.api}/subscriptions/{UNKNOWN_TOKEN}",
                        timeout=5).status_code == 404

    # Kite takes lists: one subscribe frame per account the batch landed on, not 40.
    accounts = {r["subscription"]["account_id"] for r in results[:40]}
    frames = subscribe_messages(stack, set(tokens))
    assert len(frames) == len(accounts), frames
    assert sorted(t for frame in frames for t in frame) == sorted(tokens)

    again = post_batch(stack, {"instruments": [{"instrument_token": t} for t in tokens[:5]],
                               "requested_mode": "FULL", "client_id": "desk-batch"})
    assert again.status_code == 200, again.text
    assert again.json()["unchanged"] == 5
    leave_all(stack, tokens, "desk-batch")


def test_a_malformed_item_refuses_the_whole_batch_and_records_nothing(stack):
    tokens = nfo_tokens(stack, 3, skip=1050)
    items = [{"instrument_token": tokens[0]}, {"instrument_token": tokens[1]},
             {"tradingsymbol": "NIFTY"}]

    answer = post_batch(stack, {"instruments": items})

    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_field", "instruments.2.exchange")
    for token in tokens:
        assert requests.get(f"{stack.api}/subscriptions/{token}", timeout=5).status_code == 404
    oversized = post_batch(stack, {"instruments": [{"instrument_token": 1}] * 3001})
    assert oversized.status_code == 422
    assert oversized.json()["error"]["field"] == "instruments"


def test_one_post_can_name_an_instrument_by_symbol(stack):
    [row] = nfo_rows(stack, 1, skip=1060)
    token = row["instrument_token"]

    def post(body: dict) -> requests.Response:
        return requests.post(f"{stack.api}/subscriptions", json=body, timeout=10)

    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        answer = post({"tradingsymbol": row["tradingsymbol"], "exchange": "NFO",
                       "requested_mode": "quote"})
        assert answer.status_code == 202, answer.text
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
    assert (answer.json()["instrument_token"], answer.json()["tradingsymbol"]) == (
        token, row["tradingsymbol"])

    unknown = post({"tradingsymbol": "NIFTY99JAN99999CE", "exchange": "NFO"})
    no_exchange = post({"tradingsymbol": row["tradingsymbol"]})
    both = post({"instrument_token": token, "tradingsymbol": row["tradingsymbol"],
                 "exchange": "NFO"})
    nothing = post({"requested_mode": "FULL"})
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (404, "tradingsymbol")
    assert "NIFTY99JAN99999CE" in unknown.json()["error"]["message"]
    assert (no_exchange.status_code, no_exchange.json()["error"]["field"]) == (422, "exchange")
    assert (both.status_code, both.json()["error"]["field"]) == (422, "tradingsymbol")
    assert (nothing.status_code, nothing.json()["error"]["field"]) == (422, "instrument_token")

    assert requests.delete(f"{stack.api}/subscriptions/{token}", timeout=10).status_code == 202
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        wait_settled(stack, events, token, "removed")


def test_each_new_instrument_of_a_batch_gets_its_history(stack):
    tokens = nfo_tokens(stack, 3, skip=1070)

    def completed(token: int):
        return lambda m: (m["instrument_token"] == token
                          and m["event_type"] == "backfill_completed")

    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        answer = post_batch(stack, {"instruments": [{"instrument_token": t} for t in tokens],
                                    "client_id": "desk-history"})
        assert answer.status_code == 202, answer.text
        for token in tokens:
            [done] = events.wait_for(completed(token), 30.0)
            assert done["metadata"]["candles_stored"] > 0

    leave_all(stack, tokens, "desk-history")

"""The main job end to end, through the processes `ticker run` starts.

HTTP requests go to the real API (gunicorn, two processes); the account workers hold
real KiteTicker connections to the simulator; events and ticks are read from Redis.
"""

from __future__ import annotations

import time

import pytest
import requests
from kiteconnect import KiteConnect

from tests.listen import ChannelListener

NIFTY_CE = 13660418  # the README's example: a NIFTY weekly option of the simulator
EVENT_TIMEOUT_S = 5.0


def nfo_tokens(stack, count: int, skip: int = 0) -> list[int]:
    """Option tokens of the simulator's chain other than the README's example."""
    kite = KiteConnect("simkey_a", access_token="simtoken_a", root=stack.sim_rest)
    tokens = [
        row["instrument_token"]
        for row in kite.instruments("NFO")
        if row["instrument_token"] != NIFTY_CE
    ]
    return tokens[skip : skip + count]


def subscribe(stack, token: int, mode: str = "FULL") -> requests.Response:
    return requests.post(
        f"{stack.api}/subscriptions",
        json={"instrument_token": token, "requested_mode": mode},
        timeout=10,
    )


def unsubscribe(stack, token: int) -> requests.Response:
    return requests.delete(f"{stack.api}/subscriptions/{token}", timeout=10)


def event_for(token: int, event_type: str):
    return lambda m: m["instrument_token"] == token and m["event_type"] == event_type


def sent_messages(stack, token: int) -> list[dict]:
    """Text frames the simulator received that name `token`, across connections."""
    found = []
    for connection in requests.get(f"{stack.sim_rest}/_sim/connections", timeout=5).json():
        for message in connection["messages"]:
            payload = message.get("message", message)
            values = payload.get("v", [])
            tokens = values[1] if payload.get("a") == "mode" else values
            if token in tokens:
                found.append(payload)
    return found


@pytest.fixture
def events(stack):
    with ChannelListener(stack.redis_url, stack.events_channel) as listener:
        yield listener


@pytest.fixture
def ticks(stack):
    with ChannelListener(stack.redis_url, stack.ticks_channel) as listener:
        yield listener


@pytest.fixture
def cleanup(stack):
    """Tokens a test subscribed, removed afterwards so tests stay independent."""
    tokens: list[int] = []
    yield tokens
    for token in tokens:
        unsubscribe(stack, token)


def test_subscribe_streams_ticks_and_announces_the_account(stack, events, ticks, cleanup):
    cleanup.append(NIFTY_CE)

    answer = subscribe(stack, NIFTY_CE, "full")

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["instrument_token"] == NIFTY_CE
    assert body["tradingsymbol"].startswith("NIFTY") and body["tradingsymbol"].endswith("CE")
    assert body["requested_mode"] == "FULL"
    assert body["status"] == "pending"
    assert body["account_id"] in ("sim-a", "sim-b")
    assert body["task_id"]

    [created] = events.wait_for(event_for(NIFTY_CE, "subscription_created"), EVENT_TIMEOUT_S)
    assert created["metadata"] == {
        "tradingsymbol": body["tradingsymbol"],
        "segment": "NFO-OPT",
        "requested_mode": "FULL",
        "account_id": body["account_id"],
    }
    assert abs(created["timestamp"] - time.time()) < 10

    streamed = ticks.wait_for(lambda t: t["instrument_token"] == NIFTY_CE, 5.0, count=2)
    assert all(t["mode"] == "full" and len(t["depth"]["buy"]) == 5 for t in streamed)
    assert streamed[0]["exchange_timestamp"].endswith("+05:30")

    live = requests.get(f"{stack.api}/subscriptions/{NIFTY_CE}", timeout=5).json()
    assert (live["status"], live["applied_mode"]) == ("active", "FULL")


def test_the_same_subscribe_twice_puts_the_token_on_the_socket_once(stack, events, cleanup):
    [token] = nfo_tokens(stack, 1, skip=10)
    cleanup.append(token)
    assert subscribe(stack, token, "QUOTE").status_code == 202
    events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)

    again = subscribe(stack, token, "quote")

    assert again.status_code == 200
    assert again.json()["status"] == "active"
    time.sleep(1.0)  # room for a wrongly queued second task to show itself
    assert len(events.matching(event_for(token, "subscription_created"))) == 1
    assert [m["a"] for m in sent_messages(stack, token)] == ["subscribe", "mode"]


def test_new_subscriptions_spread_over_both_accounts(stack, events, cleanup):
    tokens = nfo_tokens(stack, 6, skip=20)
    cleanup.extend(tokens)

    placed = {subscribe(stack, t).json()["account_id"] for t in tokens}
    events.wait_for(lambda m: m["event_type"] == "subscription_created"
                    and m["instrument_token"] in tokens, EVENT_TIMEOUT_S, count=6)

    assert placed == {"sim-a", "sim-b"}
    accounts = requests.get(f"{stack.api}/accounts", timeout=5).json()["accounts"]
    used = {a["account_id"]: a["used"] for a in accounts}
    assert abs(used["sim-a"] - used["sim-b"]) <= 1
    for account in accounts:
        assert account["capacity"] == 9000 and account["worker_alive"] is True
        assert account["connections"][0]["open"] is True


def test_unsubscribe_announces_removal_and_stops_the_ticks(stack, events, ticks):
    [token] = nfo_tokens(stack, 1, skip=30)
    subscribe(stack, token, "LTP")
    events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
    ticks.wait_for(lambda t: t["instrument_token"] == token, 5.0)

    answer = unsubscribe(stack, token)

    assert answer.status_code == 202
    assert answer.json()["status"] == "removing"
    [removed] = events.wait_for(event_for(token, "subscription_removed"), EVENT_TIMEOUT_S)
    assert removed["metadata"]["requested_mode"] == "LTP"
    assert removed["metadata"]["segment"] == "NFO-OPT"
    after_removal = time.monotonic()
    time.sleep(2.5)  # several tick intervals of the simulator
    late = [
        m for at, m in ticks.messages
        if m["instrument_token"] == token and at > after_removal + 0.5
    ]
    assert late == []
    assert requests.get(f"{stack.api}/subscriptions/{token}", timeout=5).json()[
        "status"
    ] == "removed"
    assert unsubscribe(stack, token).status_code == 404


def test_a_mode_change_applies_on_the_live_socket(stack, events, ticks, cleanup):
    [token] = nfo_tokens(stack, 1, skip=40)
    cleanup.append(token)
    subscribe(stack, token, "FULL")
    events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)

    answer = subscribe(stack, token, "LTP")

    assert answer.status_code == 202
    [updated] = events.wait_for(event_for(token, "subscription_updated"), EVENT_TIMEOUT_S)
    assert updated["metadata"]["requested_mode"] == "LTP"
    assert updated["metadata"]["previous_mode"] == "FULL"
    changed_at = time.monotonic()
    ticks.wait_for(lambda t: t["instrument_token"] == token and t["mode"] == "ltp", 5.0)
    late_full = [
        m for at, m in ticks.messages
        if m["instrument_token"] == token and m["mode"] == "full" and at > changed_at + 1.0
    ]
    assert late_full == []


def test_existing_subscriptions_keep_streaming_while_others_change(stack, events, ticks,
                                                                  cleanup):
    steady, *churn = nfo_tokens(stack, 6, skip=50)
    cleanup.append(steady)
    subscribe(stack, steady, "QUOTE")
    events.wait_for(event_for(steady, "subscription_created"), EVENT_TIMEOUT_S)
    ticks.wait_for(lambda t: t["instrument_token"] == steady, 5.0)
    started = time.monotonic()

    for token in churn:
        subscribe(stack, token, "FULL")
    events.wait_for(lambda m: m["event_type"] == "subscription_created"
                    and m["instrument_token"] in churn, EVENT_TIMEOUT_S, count=5)
    for token in churn:
        unsubscribe(stack, token)
    events.wait_for(lambda m: m["event_type"] == "subscription_removed"
                    and m["instrument_token"] in churn, EVENT_TIMEOUT_S, count=5)
    time.sleep(1.5)

    arrivals = [at for at, m in ticks.messages
                if m["instrument_token"] == steady and at >= started]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    interval = stack.tick_interval_s
    assert len(arrivals) >= 3
    assert max(gaps) <= 2 * interval + 0.5, gaps
    # The steady token was sent to Kite once, never again for the others' changes.
    assert [m["a"] for m in sent_messages(stack, steady)] == ["subscribe", "mode"]


def test_list_filters_by_account_and_status(stack, events, cleanup):
    tokens = nfo_tokens(stack, 2, skip=60)
    cleanup.extend(tokens)
    accounts = {t: subscribe(stack, t).json()["account_id"] for t in tokens}
    events.wait_for(lambda m: m["event_type"] == "subscription_created"
                    and m["instrument_token"] in tokens, EVENT_TIMEOUT_S, count=2)

    for token, account in accounts.items():
        listed = requests.get(f"{stack.api}/subscriptions",
                              params={"account": account, "status": "active"},
                              timeout=5).json()
        assert token in [s["instrument_token"] for s in listed["subscriptions"]]
        assert {s["account_id"] for s in listed["subscriptions"]} == {account}
        assert listed["count"] == len(listed["subscriptions"])


def test_health_reports_every_part(stack):
    answer = requests.get(f"{stack.api}/health", timeout=5)

    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "healthy"
    assert (body["database"], body["redis"]) == ("ok", "ok")
    assert set(body["workers"]) == {"sim-a", "sim-b"}
    assert all(w["alive"] and w["connections_open"] >= 1 for w in body["workers"].values())


def test_a_subscribe_without_a_mode_keeps_a_live_subscriptions_mode(stack, events, cleanup):
    [token] = nfo_tokens(stack, 1, skip=70)
    cleanup.append(token)
    subscribe(stack, token, "FULL")
    events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)

    again = requests.post(f"{stack.api}/subscriptions", json={"instrument_token": token},
                          timeout=10)

    assert again.status_code == 200
    assert again.json()["requested_mode"] == "FULL"
    time.sleep(0.5)
    assert events.matching(event_for(token, "subscription_updated")) == []

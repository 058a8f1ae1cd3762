"""Placement under concurrent requests spread over the API's two gunicorn processes.

A stack of its own with small limits (50 instruments on 1 connection per account), so
a burst of 500 requests for distinct tokens reaches them.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e.test_subscriptions import EVENT_TIMEOUT_S, event_for, nfo_tokens
from tests.listen import ChannelListener
from tests.stack import Stack, running_stack

PER_ACCOUNT = 50
BURST = 500
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def small_stack(run_id: str, tmp_path_factory: pytest.TempPathFactory):
    workdir: Path = tmp_path_factory.mktemp("small-stack")
    accounts = workdir / "accounts.yaml"
    accounts.write_text(yaml.safe_dump({"accounts": [
        {"id": account, "api_key": f"simkey_{suffix}", "access_token": f"simtoken_{suffix}",
         "max_instruments_per_connection": PER_ACCOUNT, "max_connections": 1}
        for account, suffix in (("sim-a", "a"), ("sim-b", "b"))
    ]}))
    with running_stack(f"{run_id}small", workdir, TICKER_ACCOUNTS_FILE=str(accounts),
                       TICKER_SIM_TICK_INTERVAL_S="0.5") as stack:
        yield stack


def post(stack: Stack, token: int) -> requests.Response:
    return requests.post(f"{stack.api}/subscriptions",
                         json={"instrument_token": token, "requested_mode": "LTP"},
                         timeout=30)


def test_one_token_requested_at_once_is_placed_once(small_stack):
    [token] = nfo_tokens(small_stack, 1, skip=200)
    with ChannelListener(small_stack.redis_url, small_stack.events_channel) as events:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: post(small_stack, token), range(24)))
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)

        statuses = Counter(a.status_code for a in answers)
        assert statuses == {202: 1, 200: 23}
        assert len({a.json()["account_id"] for a in answers}) == 1
        assert len(events.matching(event_for(token, "subscription_created"))) == 1

    assert requests.delete(f"{small_stack.api}/subscriptions/{token}", timeout=10).ok


def test_a_burst_fills_exactly_the_capacity_and_no_account_exceeds_it(small_stack,
                                                                      record_property):
    tokens = nfo_tokens(small_stack, BURST, skip=300)
    assert len(tokens) == BURST
    with ChannelListener(small_stack.redis_url, small_stack.events_channel) as events:
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            answers = dict(zip(tokens, pool.map(lambda t: post(small_stack, t), tokens)))
        answered_s = time.monotonic() - started
        accepted = {t: a.json()["account_id"] for t, a in answers.items()
                    if a.status_code == 202}
        events.wait_for(lambda m: m["event_type"] == "subscription_created"
                        and m["instrument_token"] in accepted, 6 * EVENT_TIMEOUT_S,
                        count=len(accepted))

    refused = [a for a in answers.values() if a.status_code != 202]
    record_property("POSTs from 32 threads, answered in seconds",
                    f"{BURST}, {answered_s:.2f}")
    record_property("answers", dict(Counter(a.status_code for a in answers.values())))
    record_property("accepted by account", dict(Counter(accepted.values())))
    assert len(accepted) == 2 * PER_ACCOUNT
    assert {a.status_code for a in refused} == {503}
    assert {a.json()["error"]["code"] for a in refused} == {"capacity_exhausted"}
    assert Counter(accepted.values()) == {"sim-a": PER_ACCOUNT, "sim-b": PER_ACCOUNT}

    listed = requests.get(f"{small_stack.api}/subscriptions", timeout=10).json()
    assert {s["instrument_token"]: s["account_id"] for s in listed["subscriptions"]} \
        == accepted
    connections = requests.get(f"{small_stack.sim_rest}/_sim/connections", timeout=10).json()
    on_sockets = {
        int(token): {"simkey_a": "sim-a", "simkey_b": "sim-b"}[c["api_key"]]
        for c in connections for token in c["subscriptions"]
    }
    assert on_sockets == accepted
    assert all(len(c["subscriptions"]) <= PER_ACCOUNT for c in connections)

"""Kite-side socket faults caused for real through the simulator's switches.

A stack of its own, with an accounts file of its own (one test rotates a token in it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e.test_subscriptions import (
    EVENT_TIMEOUT_S,
    event_for,
    nfo_tokens,
    subscribe,
)
from tests.e2e.test_workers import worker_process
from tests.listen import ChannelListener
from tests.stack import TICKER, Stack, running_stack
from ticker.config import EXAMPLE_ACCOUNTS_FILE

API_KEYS = {"sim-a": "simkey_a", "sim-b": "simkey_b"}
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def fault_stack(run_id: str, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("fault-stack")
    accounts = workdir / "accounts.yaml"
    shutil.copy(EXAMPLE_ACCOUNTS_FILE, accounts)
    with running_stack(f"{run_id}fault", workdir, TICKER_ACCOUNTS_FILE=str(accounts),
                       TICKER_SIM_TICK_INTERVAL_S="0.5",
                       TICKER_WORKER_RECONCILE_S="3") as stack:
        yield stack


def sim(stack: Stack, method: str, path: str, **kwargs) -> requests.Response:
    answer = requests.request(method, f"{stack.sim_rest}/_sim/{path}", timeout=10, **kwargs)
    answer.raise_for_status()
    return answer


def live_connections(stack: Stack, api_key: str) -> list[dict]:
    return sim(stack, "GET", "connections", params={"api_key": api_key}).json()


def worker_report(stack: Stack, account: str) -> dict:
    return requests.get(f"{stack.api}/health", timeout=10).json()["workers"][account]


def reconnects(stack: Stack, account: str) -> int:
    """Reconnects the account's worker counted over its connections (GET /accounts)."""
    [entry] = [a for a in requests.get(f"{stack.api}/accounts", timeout=10).json()["accounts"]
               if a["account_id"] == account]
    return sum(c["reconnects"] for c in entry["connections"])


def worker_state(stack: Stack, account: str) -> str:
    return worker_report(stack, account)["state"]


def wait_until(condition, timeout_s: float, what: str, stack: Stack) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"{what} not within {timeout_s}s:\n{stack.process.tail(60)}")


def subscribed_on(stack: Stack, account: str, count: int, skip: int) -> dict[int, str]:
    """`count` tokens subscribed (and created) on `account`, with their modes."""
    placed: dict[int, str] = {}
    modes = ["FULL", "QUOTE", "LTP"]
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        for token in nfo_tokens(stack, 4 * count, skip=skip):
            if len(placed) == count:
                break
            answer = subscribe(stack, token, modes[len(placed) % 3])
            try:
                events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{answer.text}\n{stack.process.tail(60)}") from None
            if answer.json()["account_id"] == account:
                placed[token] = answer.json()["requested_mode"].lower()
    assert len(placed) == count
    return placed


def assert_each_token_sent_once(connection: dict, tokens: dict[int, str]) -> None:
    """On this connection every token was subscribed once; `tokens` in their modes."""
    subscribes: Counter[int] = Counter()
    for message in connection["messages"]:
        payload = message.get("message") or {}
        if payload.get("a") == "subscribe":
            subscribes.update(payload["v"])
    on_socket = {int(t): m for t, m in connection["subscriptions"].items()}
    assert subscribes == Counter(on_socket.keys())
    assert {t: on_socket.get(t) for t in tokens} == tokens


@pytest.mark.parametrize(("code", "skip"), [(1006, 300), (1000, 330)])
def test_a_dropped_socket_comes_back_with_each_token_subscribed_once(fault_stack, code,
                                                                     skip, record_property):
    tokens = subscribed_on(fault_stack, "sim-a", 3, skip=skip)
    before = {c["id"] for c in live_connections(fault_stack, "simkey_a")}

    sim(fault_stack, "POST", "accounts/simkey_a/drop", json={"code": code})
    dropped_at = time.monotonic()
    wait_until(lambda: any(c["id"] not in before and c["subscriptions"]
                           for c in live_connections(fault_stack, "simkey_a")),
               20, "a new connection with the account's tokens", fault_stack)
    with ChannelListener(fault_stack.redis_url, fault_stack.ticks_channel) as ticks:
        for token in tokens:
            ticks.wait_for(lambda t, token=token: t["instrument_token"] == token, 10.0)
    resumed_s = time.monotonic() - dropped_at
    record_property("seconds from the drop to every token ticking again", round(resumed_s, 2))

    [fresh] = [c for c in live_connections(fault_stack, "simkey_a") if c["id"] not in before]
    assert_each_token_sent_once(fresh, tokens)
    assert resumed_s < 10


def test_a_silent_socket_is_noticed_dropped_and_replaced(fault_stack, record_property):
    tokens = subscribed_on(fault_stack, "sim-b", 2, skip=360)
    [silent] = live_connections(fault_stack, "simkey_b")

    sim(fault_stack, "POST", f"connections/{silent['id']}/silence")
    degraded_s = wait_until(lambda: worker_state(fault_stack, "sim-b") == "degraded", 10,
                            "sim-b reported degraded", fault_stack)
    healed_s = wait_until(lambda: worker_state(fault_stack, "sim-b") == "ok", 20,
                          "sim-b healthy again", fault_stack)
    record_property("seconds from silence to degraded", round(degraded_s, 2))
    record_property("seconds from degraded to ok on a new socket", round(healed_s, 2))

    [fresh] = live_connections(fault_stack, "simkey_b")
    assert fresh["id"] != silent["id"]
    assert_each_token_sent_once(fresh, tokens)
    closed = sim(fault_stack, "GET", "closed", params={"api_key": "simkey_b"}).json()
    assert any(c["id"] == silent["id"] for c in closed)
    assert degraded_s < 10 and healed_s < 20


def test_a_kite_error_text_frame_is_never_read_as_a_live_subscription(fault_stack):
    limited = [connection for api_key in API_KEYS.values()
               for connection in live_connections(fault_stack, api_key)]
    token = nfo_tokens(fault_stack, 1, skip=380)[0]

    def row() -> dict:
        return requests.get(f"{fault_stack.api}/subscriptions/{token}", timeout=5).json()

    with ChannelListener(fault_stack.redis_url, fault_stack.events_channel) as events:
        try:
            # Kite takes nothing more on any live connection: its answer is an error
            # text frame on a socket that stays up.
            for connection in limited:
                sim(fault_stack, "POST", f"connections/{connection['id']}/limit",
                    json={"instruments": len(connection["subscriptions"])})
            answer = subscribe(fault_stack, token, "FULL")
            account = answer.json()["account_id"]
            wait_until(lambda: "Kite refused" in (row().get("status_reason") or ""), 20,
                       "the refusal recorded on the subscription", fault_stack)
            refused = row()
            # Workers report their state every few seconds.
            wait_until(lambda: worker_report(fault_stack, account)["refusals"] >= 1, 10,
                       "the refusal counted in /health", fault_stack)
            report = worker_report(fault_stack, account)
            created_early = events.matching(event_for(token, "subscription_created"))
        finally:
            for connection in limited:
                sim(fault_stack, "POST", f"connections/{connection['id']}/limit",
                    json={"instruments": 3000})
        # With room again, a reconcile round subscribes it and only then announces it.
        events.wait_for(event_for(token, "subscription_created"), 30.0)
        time.sleep(2)  # a second announcement would come with the next round
        created = events.matching(event_for(token, "subscription_created"))

    assert answer.status_code == 202
    assert refused["status"] == "pending"
    assert "Can't subscribe to more than" in refused["status_reason"]
    assert created_early == []
    assert report["state"] == "ok"  # the socket stayed up
    assert len(created) == 1 and row()["status"] == "active"
    assert row()["status_reason"] is None


def test_a_refused_token_moves_the_subscriptions_and_a_new_token_restores_the_account(
    fault_stack, record_property,
):
    tokens = subscribed_on(fault_stack, "sim-b", 2, skip=400)
    refused_before = sim(fault_stack, "GET", "stats").json()["refused_forbidden"]

    with ChannelListener(fault_stack.redis_url, fault_stack.events_channel) as events:
        sim(fault_stack, "POST", "accounts/simkey_b/revoke")
        revoked_at = time.monotonic()
        failed_s = wait_until(lambda: worker_state(fault_stack, "sim-b") == "auth_failed", 15,
                              "sim-b reported auth_failed", fault_stack)
        moves = [events.wait_for(event_for(t, "subscription_moved"), 15.0)[0]
                 for t in tokens]
        moved_s = time.monotonic() - revoked_at
        time.sleep(4)  # a retry loop would show several refused upgrades by now
    refused = sim(fault_stack, "GET", "stats").json()["refused_forbidden"] - refused_before
    health = requests.get(f"{fault_stack.api}/health", timeout=10)
    reconnects_while_refused = reconnects(fault_stack, "sim-b")
    placed_meanwhile = [
        subscribe(fault_stack, t, "LTP").json()["account_id"]
        for t in nfo_tokens(fault_stack, 3, skip=440)
    ]

    record_property("seconds from the revoke to auth_failed in /health", round(failed_s, 2))
    record_property("seconds from the revoke to every subscription moved", round(moved_s, 2))
    record_property("upgrades refused (a retry loop would show more)", refused)
    assert refused == 1
    assert health.status_code == 503 and "workers.sim-b" in health.json()["failing"]
    assert placed_meanwhile == ["sim-a"] * 3
    assert [(m["metadata"]["previous_account_id"], m["metadata"]["account_id"])
            for m in moves] == [("sim-b", "sim-a")] * 2
    on_a = {int(t): m for c in live_connections(fault_stack, "simkey_a")
            for t, m in c["subscriptions"].items()}
    assert {t: on_a.get(t) for t in tokens} == tokens

    # The day's new token: installed at Kite, then written to the accounts file.
    sim(fault_stack, "POST", "accounts/simkey_b/token", json={"access_token": "simtoken_b2"})
    accounts_file = Path(fault_stack.env["TICKER_ACCOUNTS_FILE"])
    config = yaml.safe_load(accounts_file.read_text())
    for account in config["accounts"]:
        if account["id"] == "sim-b":
            account["access_token"] = "simtoken_b2"
    accounts_file.write_text(yaml.safe_dump(config))

    restored_s = wait_until(lambda: worker_state(fault_stack, "sim-b") == "ok", 20,
                            "sim-b back with the new token", fault_stack)
    [fresh] = live_connections(fault_stack, "simkey_b")
    assert fresh["subscriptions"] == {}, "moved tokens must not come back to sim-b"
    record_property("seconds from the new token in the file to ok", round(restored_s, 2))
    # Redialing with the new token counts as a reconnect, in /accounts and the metrics.
    assert reconnects(fault_stack, "sim-b") > reconnects_while_refused
    assert restored_s < 20
    again = subscribe(fault_stack, nfo_tokens(fault_stack, 1, skip=450)[0], "LTP")
    assert again.json()["account_id"] == "sim-b"


def test_sigterm_closes_the_sockets_cleanly_and_a_second_worker_never_overlaps(fault_stack,
                                                                               record_property):
    peak = {"simkey_a": 0}
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            peak["simkey_a"] = max(peak["simkey_a"],
                                   len(live_connections(fault_stack, "simkey_a")))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # A second worker for the same account, as a careless operator would start it.
    second = subprocess.Popen([TICKER, "worker", "--account", "sim-a"],
                              env=fault_stack.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(4)
        first = worker_process(fault_stack, "sim-a")
        [connection] = live_connections(fault_stack, "simkey_a")

        first.send_signal(signal.SIGTERM)
        sent_at = time.time()
        first.wait(15)
        exited_s = time.time() - sent_at

        closed = wait_until(
            lambda: any(c["id"] == connection["id"] for c in
                        sim(fault_stack, "GET", "closed", params={"api_key": "simkey_a"})
                        .json()), 10, "the old connection closed", fault_stack)
        record = next(c for c in sim(fault_stack, "GET", "closed",
                                     params={"api_key": "simkey_a"}).json()
                      if c["id"] == connection["id"])
        # The standby worker or the runner's replacement takes over.
        wait_until(lambda: len(live_connections(fault_stack, "simkey_a")) == 1, 30,
                   "a replacement connection", fault_stack)
    finally:
        watching.clear()
        watcher.join(5)
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(15)

    record_property("seconds from SIGTERM to the worker's exit", round(exited_s, 2))
    record_property("close code", record["close_code"])
    record_property("most connections the account held at once", peak["simkey_a"])
    assert (record["close_code"], record["closed_by"]) == (1000, "client")
    assert exited_s < 10 and closed < 10
    assert peak["simkey_a"] == 1


def test_a_token_refused_when_the_worker_starts_moves_its_subscriptions_too(fault_stack):
    tokens = subscribed_on(fault_stack, "sim-b", 2, skip=470)
    accounts_file = Path(fault_stack.env["TICKER_ACCOUNTS_FILE"])
    config = yaml.safe_load(accounts_file.read_text())
    [sim_b] = [a for a in config["accounts"] if a["id"] == "sim-b"]

    with ChannelListener(fault_stack.redis_url, fault_stack.events_channel) as events:
        # Kite's token rotates while the worker is away: its restart dials with the
        # file's old token and is refused from the first upgrade.
        sim(fault_stack, "POST", "accounts/simkey_b/token",
            json={"access_token": "simtoken_b_next"})
        worker = worker_process(fault_stack, "sim-b")
        worker.send_signal(signal.SIGTERM)
        worker.wait(15)
        wait_until(lambda: worker_state(fault_stack, "sim-b") == "auth_failed", 30,
                   "the restarted sim-b reported auth_failed", fault_stack)
        moves = [events.wait_for(event_for(t, "subscription_moved"), 20.0)[0]
                 for t in tokens]

    assert [(m["metadata"]["previous_account_id"], m["metadata"]["account_id"])
            for m in moves] == [("sim-b", "sim-a")] * 2
    on_a = {int(t): m for c in live_connections(fault_stack, "simkey_a")
            for t, m in c["subscriptions"].items()}
    assert {t: on_a.get(t) for t in tokens} == tokens

    # The day's token in the file brings the account back without another restart.
    sim_b["access_token"] = "simtoken_b_next"
    accounts_file.write_text(yaml.safe_dump(config))
    wait_until(lambda: worker_state(fault_stack, "sim-b") == "ok", 20,
               "sim-b back with the new token", fault_stack)

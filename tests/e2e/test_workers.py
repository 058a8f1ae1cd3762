"""Account workers as processes: restarted from PostgreSQL's state, seen by Flower."""

from __future__ import annotations

import signal
import time

import psutil
import pytest
import requests

from tests.e2e.test_subscriptions import (
    EVENT_TIMEOUT_S,
    event_for,
    nfo_tokens,
    subscribe,
    unsubscribe,
)
from tests.listen import ChannelListener

pytestmark = pytest.mark.timeout(180)

EXPECTED = {"account-sim-a", "account-sim-b", "backfill"}


def worker_process(stack, account_id: str) -> psutil.Process:
    runner = psutil.Process(stack.process.process.pid)
    for process in runner.children(recursive=True):
        cmdline = process.cmdline()
        if "worker" in cmdline and "--queues" in cmdline and any(
            arg.endswith(f"account.{account_id}") for arg in cmdline
        ):
            return process
    raise AssertionError(f"no worker process for {account_id}")


def socket_subscriptions(stack, api_key: str) -> dict[str, str]:
    connections = requests.get(
        f"{stack.sim_rest}/_sim/connections", params={"api_key": api_key}, timeout=5
    ).json()
    merged: dict[str, str] = {}
    for connection in connections:
        merged.update(connection["subscriptions"])
    return merged


def test_a_restarted_worker_resubscribes_everything_from_the_database(stack):
    tokens = nfo_tokens(stack, 4, skip=100)
    modes = dict(zip(tokens, ["LTP", "QUOTE", "FULL", "QUOTE"]))
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        placed = {t: subscribe(stack, t, m).json()["account_id"] for t, m in modes.items()}
        events.wait_for(lambda m: m["event_type"] == "subscription_created"
                        and m["instrument_token"] in tokens, EVENT_TIMEOUT_S, count=4)
        mine = {t: m for t, m in modes.items() if placed[t] == "sim-a"}
        assert mine, placed
        old = worker_process(stack, "sim-a")

        old.send_signal(signal.SIGTERM)
        old.wait(15)

        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            on_socket = socket_subscriptions(stack, "simkey_a")
            if all(on_socket.get(str(t)) == m.lower() for t, m in mine.items()):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"sim-a's tokens not back on its socket: {on_socket}, want {mine}")
        with ChannelListener(stack.redis_url, stack.ticks_channel) as ticks:
            for token, mode in mine.items():
                ticks.wait_for(lambda t, token=token, mode=mode: t["instrument_token"] == token
                               and t["mode"] == mode.lower(), 5.0)
        # Restoring what was already live announces nothing new.
        for token in tokens:
            assert len(events.matching(event_for(token, "subscription_created"))) == 1

    assert worker_process(stack, "sim-a").pid != old.pid
    for token in tokens:
        unsubscribe(stack, token)


def test_flower_lists_every_worker_and_its_queue(stack):
    # No refresh asked: the stack said it was up only once Flower listed them all.
    workers = requests.get(f"{stack.flower}/api/workers", timeout=10).json()
    names = {name.split("@")[0] for name in workers}

    assert EXPECTED <= names
    prefix = stack.env["TICKER_ACCOUNT_QUEUE_PREFIX"]
    for name, info in workers.items():
        worker = name.split("@")[0]
        queues = [q["name"] for q in info.get("active_queues", [])]
        if worker == "backfill":
            assert queues == ["ticker.backfill"]
        else:
            assert queues == [f"{prefix}{worker.removeprefix('account-')}"]


def test_a_worker_killed_mid_subscribe_confirms_it_once_after_restart(stack, record_property):
    tokens = nfo_tokens(stack, 6, skip=500)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        placed = {t: subscribe(stack, t, "LTP").json()["account_id"] for t in tokens}
        worker_process(stack, "sim-b").send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        # The dead worker's lease lapses before its replacement may take over.
        for token in tokens:
            events.wait_for(event_for(token, "subscription_created"), 45.0)
        # The killed worker may have announced them all before it died: what counts
        # is that its replacement carries them, and then announces none again.
        on_sim_b = {t for t, a in placed.items() if a == "sim-b"}
        deadline = time.monotonic() + 45
        while not on_sim_b <= {int(t) for t in socket_subscriptions(stack, "simkey_b")}:
            assert time.monotonic() < deadline, "no replacement took the tokens"
            time.sleep(0.5)
        record_property("seconds from SIGKILL to the replacement holding its tokens",
                        round(time.monotonic() - killed_at, 2))
        time.sleep(2 * float(stack.env.get("TICKER_WORKER_RECONCILE_S", "2")))

        for token in tokens:
            assert len(events.matching(event_for(token, "subscription_created"))) == 1
    for token in tokens:
        assert requests.get(f"{stack.api}/subscriptions/{token}", timeout=5).json()[
            "status"] == "active"
        unsubscribe(stack, token)


def test_changes_for_a_stopped_worker_wait_in_its_queue_and_apply_when_it_returns(
    stack, record_property,
):
    frozen = worker_process(stack, "sim-a")
    placed: dict[int, str] = {}
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        frozen.send_signal(signal.SIGSTOP)
        try:
            # Placement spreads by free room: keep asking until sim-a holds three.
            for token in nfo_tokens(stack, 12, skip=520):
                placed[token] = subscribe(stack, token, "QUOTE").json()["account_id"]
                if list(placed.values()).count("sim-a") == 3:
                    break
            tokens = list(placed)
            waiting = [t for t, a in placed.items() if a == "sim-a"]
            health = requests.get(f"{stack.api}/health", timeout=10).json()
            time.sleep(1.0)
            early = [t for t in waiting if events.matching(event_for(t, "subscription_created"))]
        finally:
            frozen.send_signal(signal.SIGCONT)
        for token in tokens:
            events.wait_for(event_for(token, "subscription_created"), 20.0)

    record_property("backlog /health read from the broker", health["workers"]["sim-a"]["backlog"])
    assert len(waiting) == 3, placed
    assert early == []
    # A stopped worker had taken one message off the queue before it froze; the
    # rest wait in the broker, which /health reads.
    assert health["workers"]["sim-a"]["backlog"] >= len(waiting) - 1
    for token in tokens:
        unsubscribe(stack, token)

"""The socket holder against the simulator, in this process, through the real client.

Twisted's reactor runs once per process and cannot restart, so every holder of this
module shares it (as every holder of a worker process does).
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
import redis
import requests

from tests.conftest import free_port
from ticker.accounts import Account
from ticker.config import Settings
from ticker.errors import CapacityExhausted, SubscriptionRefused
from ticker.fanout import TickFanout
from ticker.simulator.credentials import Credentials
from ticker.simulator.threaded import SimulatorThread
from ticker.socket_holder import Phase, SocketHolder
from ticker.subscriptions import Mode

TOKENS = [((53361 + i) << 8) | 2 for i in range(10)]


@pytest.fixture(scope="module")
def simulator():
    with SimulatorThread(Settings(sim_ws_port=0, sim_rest_port=0,
                                  sim_tick_interval_s=0.2)) as sim:
        yield sim


@pytest.fixture
def holder(simulator):
    frames: list[bytes] = []
    holder = SocketHolder(
        account_id="sim-a", api_key="simkey_a", access_token="simtoken_a",
        ws_root=simulator.ws_url, max_instruments_per_connection=2, max_connections=2,
        on_frame=frames.append,
    )
    holder.frames = frames  # type: ignore[attr-defined]
    yield holder
    holder.stop()


def connections(simulator) -> list[dict]:
    return requests.get(f"{simulator.rest_url.rstrip('/')}/_sim/connections",
                        params={"api_key": "simkey_a"}, timeout=5).json()


def tokens_sent(simulator) -> set[int]:
    sent: set[int] = set()
    for connection in connections(simulator):
        for message in connection["messages"]:
            payload = message.get("message") or {}
            if payload.get("a") == "subscribe":
                sent.update(payload["v"])
    return sent


def wait_open(holder: SocketHolder, token: int) -> None:
    assert holder.wait_until_open(token, 10), f"no open socket for {token}"


def test_changes_apply_on_the_live_socket_one_token_at_a_time(holder, simulator):
    holder.start({TOKENS[0]: Mode.FULL})
    wait_open(holder, TOKENS[0])

    holder.subscribe(TOKENS[1], Mode.LTP)
    holder.subscribe(TOKENS[0], Mode.QUOTE)
    time.sleep(0.5)

    [connection] = connections(simulator)
    messages = [m["message"] for m in connection["messages"]]
    assert messages == [
        {"a": "subscribe", "v": [TOKENS[0]]},
        {"a": "mode", "v": ["full", [TOKENS[0]]]},
        {"a": "subscribe", "v": [TOKENS[1]]},
        {"a": "mode", "v": ["ltp", [TOKENS[1]]]},
        {"a": "mode", "v": ["quote", [TOKENS[0]]]},
    ]
    assert connection["subscriptions"] == {str(TOKENS[0]): "quote", str(TOKENS[1]): "ltp"}
    assert holder.frames, "no tick frame reached the holder"


def test_the_limits_are_never_exceeded_on_the_wire(holder, simulator):
    holder.start({})
    for token in TOKENS[:4]:
        holder.subscribe(token, Mode.LTP)
    for token in TOKENS[:4]:
        wait_open(holder, token)
    time.sleep(0.5)

    with pytest.raises(CapacityExhausted, match="its limit"):
        holder.subscribe(TOKENS[4], Mode.LTP)

    live = connections(simulator)
    assert len(live) == 2
    assert sorted(len(c["subscriptions"]) for c in live) == [2, 2]
    assert TOKENS[4] not in tokens_sent(simulator)
    assert holder.mode_of(TOKENS[4]) is None


def test_stopping_closes_every_connection_with_code_1000(holder, simulator):
    holder.start({TOKENS[0]: Mode.LTP, TOKENS[1]: Mode.LTP, TOKENS[2]: Mode.LTP})
    wait_open(holder, TOKENS[2])
    ids = {c["id"] for c in connections(simulator)}

    holder.stop()

    closed = requests.get(f"{simulator.rest_url.rstrip('/')}/_sim/closed", timeout=5).json()
    codes = {c["id"]: (c["close_code"], c["closed_by"]) for c in closed if c["id"] in ids}
    assert codes == {i: (1000, "client") for i in ids}


def test_a_holder_that_gave_up_reconnecting_tries_again_later(tmp_path):
    port = free_port()
    holder = SocketHolder(
        account_id="sim-a", api_key="simkey_a", access_token="simtoken_a",
        ws_root=f"ws://127.0.0.1:{port}", max_instruments_per_connection=10,
        max_connections=1, on_frame=lambda frame: None,
        reconnect_max_tries=1, revive_after_s=3.0,
    )
    try:
        holder.start({TOKENS[0]: Mode.LTP})
        deadline = time.monotonic() + 20
        while holder.states()[0].phase is not Phase.GAVE_UP:
            assert time.monotonic() < deadline, holder.states()
            time.sleep(0.1)

        # Kite (here: the simulator) comes back on the same address.
        settings = Settings(sim_ws_port=port, sim_rest_port=0)
        with SimulatorThread(settings):
            assert holder.wait_until_open(TOKENS[0], 30), holder.states()
            assert holder.states()[0].phase is Phase.OPEN
            holder.stop()
    finally:
        holder.stop()


def test_a_kite_error_text_frame_is_never_taken_as_a_subscription():
    # Kite holds this api_key to one instrument a connection while the holder
    # believes in three thousand: the second subscribe is answered with an error.
    strict = Credentials([Account(id="sim-a", api_key="simkey_a",
                                  access_token="simtoken_a",
                                  max_instruments_per_connection=1)])
    settings = Settings(sim_ws_port=0, sim_rest_port=0, sim_tick_interval_s=5)
    with SimulatorThread(settings, credentials=strict) as sim:
        holder = SocketHolder(
            account_id="sim-a", api_key="simkey_a", access_token="simtoken_a",
            ws_root=sim.ws_url, max_instruments_per_connection=3000, max_connections=1,
            on_frame=lambda frame: None, confirm_window_s=3,
        )
        try:
            holder.start({TOKENS[0]: Mode.FULL})
            wait_open(holder, TOKENS[0])
            holder.wait_confirmed(TOKENS[0])
            holder.subscribe(TOKENS[1], Mode.FULL)
            with pytest.raises(SubscriptionRefused, match="more than 1 instruments"):
                holder.wait_confirmed(TOKENS[1])

            assert holder.tokens() == {TOKENS[0]: Mode.FULL}
            assert [s.refusals for s in holder.states()] == [1]
            [connection] = connections(sim)
            # One error for the subscribe and one for the mode sent with it.
            refusal = "Can't subscribe to more than 1 instruments."
            assert set(connection["errors_sent"]) == {refusal}
            assert connection["subscriptions"] == {str(TOKENS[0]): "full"}
        finally:
            holder.stop()


def test_frames_beyond_the_backlog_are_dropped_and_counted_not_queued():
    # A server that accepts and never answers stands for a Redis that hangs.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        client = redis.Redis(port=mute.getsockname()[1], socket_timeout=3)
        fanout = TickFanout(client, "ticks", "sim-a", max_backlog=5)
        fanout.start()
        frame = struct.pack(">HHII", 1, 8, TOKENS[0], 12345)

        for _ in range(40):
            fanout.submit(frame)
            time.sleep(0.002)
        stats = fanout.stats()

    assert stats.frames_received == 40
    assert stats.backlog == 5
    assert stats.frames_dropped >= 40 - 5 - 5
    assert stats.ticks_published == 0

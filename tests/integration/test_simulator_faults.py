"""Kite-side faults caused through the simulator's /_sim/ switches, for real.

The client is the official KiteTicker, run in a subprocess by the probe of
`test_simulator` (one Twisted reactor per process), so what is asserted about
reconnects and refusals is what pykiteconnect really does.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
import yaml
from kiteconnect import KiteConnect
from kiteconnect.exceptions import TokenException

from tests.integration.test_simulator import (
    CALL,
    INDEX,
    PUT,
    TICK_INTERVAL_S,
    run_probe,
    start_probe,
    ticker,
    wait_for,
)
from ticker.config import Settings
from ticker.simulator import SimulatorThread

# Twisted's first reconnect comes about 1.1 s after a drop, the next ~2.7 s later.
RECONNECT_WAIT_S = 10.0


@pytest.fixture
def sim(tmp_path):
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(
        yaml.safe_dump(
            {
                "accounts": [
                    {
                        "id": "alpha",
                        "api_key": "key_alpha",
                        "access_token": "tok_alpha",
                    },
                    {"id": "beta", "api_key": "key_beta", "access_token": "tok_beta"},
                ]
            }
        )
    )
    settings = Settings(
        sim_host="127.0.0.1",
        sim_ws_port=0,
        sim_rest_port=0,
        sim_tick_interval_s=TICK_INTERVAL_S,
        accounts_file=accounts,
        sim_instruments_file=None,
    )
    with SimulatorThread(settings) as running:
        yield running


def sim_get(sim, path: str, **params):
    response = requests.get(sim.rest_url + "_sim/" + path, params=params, timeout=5)
    response.raise_for_status()
    return response.json()


def sim_post(sim, path: str, body: dict | None = None) -> requests.Response:
    return requests.post(sim.rest_url + "_sim/" + path, json=body, timeout=15)


def live(sim, api_key: str = "key_alpha") -> list[dict]:
    return sim_get(sim, "connections", api_key=api_key)


def subscribed_connection(sim, tokens: dict[int, str], api_key="key_alpha") -> dict:
    """The one live connection of api_key once it streams `tokens` in their modes."""
    wanted = {str(t): m for t, m in tokens.items()}
    [connection] = wait_for(
        lambda: [
            c
            for c in live(sim, api_key)
            if c["subscriptions"] == wanted and c["ticks_sent"]
        ]
    )
    return connection


def finish(probe) -> list[dict]:
    out, _ = probe.communicate(timeout=60)
    assert probe.returncode == 0
    return json.loads(out)


def client(sim, access_token: str, api_key: str = "key_alpha") -> KiteConnect:
    return KiteConnect(
        api_key, access_token=access_token, root=sim.rest_url.rstrip("/")
    )


def subscribe_messages(connection: dict) -> list[list[int]]:
    return [
        m["message"]["v"]
        for m in connection["messages"]
        if m["message"]["a"] == "subscribe"
    ]


# -- drop --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "closed_by", "server_code"),
    [(1006, "abort", None), (1000, "server", 1000)],
)
def test_a_dropped_client_reconnects_on_a_new_id_and_subscribes_each_token_once(
    sim, code, closed_by, server_code
):
    actions = [[0, "subscribe", [CALL, PUT]], [0, "mode", "full", [CALL]]]
    probe = start_probe(
        sim.ws_url, [ticker(actions=actions, every_connect=False)], seconds=3.5
    )
    try:
        first = subscribed_connection(sim, {CALL: "full", PUT: "quote"})

        dropped = sim_post(sim, f"connections/{first['id']}/drop", {"code": code})
        second = wait_for(
            lambda: [
                c for c in live(sim) if c["id"] != first["id"] and c["ticks_sent"]
            ],
            timeout_s=RECONNECT_WAIT_S,
        )
    finally:
        [seen] = finish(probe)

    assert dropped.status_code == 200
    assert dropped.json()["id"] == first["id"]
    assert dropped.json()["closed_by"] == closed_by
    assert dropped.json()["close_code"] is None
    [again] = second
    assert again["id"] > first["id"]
    assert again["subscriptions"] == {str(CALL): "full", str(PUT): "quote"}
    subscribed = [token for tokens in subscribe_messages(again) for token in tokens]
    assert sorted(subscribed) == sorted([CALL, PUT]), again["messages"]
    assert seen["connects"] == 2
    assert seen["closes"][0][0] == code, seen["closes"]
    if code == 1006:
        assert "closed uncleanly" in seen["closes"][0][1]
    [record] = [c for c in sim_get(sim, "closed") if c["id"] == first["id"]]
    assert record["closed_by"] == closed_by
    assert record["server_code"] == server_code
    assert record["reason"] == "drop"


def test_dropping_an_account_drops_each_of_its_connections_and_no_other(sim):
    plan = [ticker(), ticker(), ticker("key_beta", "tok_beta")]
    probe = start_probe(sim.ws_url, plan, seconds=3.0)
    try:
        alpha = wait_for(lambda: len(live(sim)) == 2 and live(sim))
        beta = wait_for(lambda: live(sim, "key_beta"))

        dropped = sim_post(sim, "accounts/key_alpha/drop")
        beta_after = live(sim, "key_beta")
        after = wait_for(lambda: len(live(sim)) == 2 and live(sim), RECONNECT_WAIT_S)
    finally:
        seen = finish(probe)

    assert dropped.status_code == 200
    assert sorted(dropped.json()) == sorted(c["id"] for c in alpha)
    assert not {c["id"] for c in after} & {c["id"] for c in alpha}
    assert [s["connects"] for s in seen] == [2, 2, 1]
    assert [c["id"] for c in beta_after] == [c["id"] for c in beta]


def test_switches_answer_404_for_unknown_targets_and_400_for_bad_bodies(sim):
    assert sim_post(sim, "connections/999/drop").status_code == 404
    assert sim_post(sim, "connections/nope/silence").status_code == 404
    assert sim_post(sim, "connections/999/resume").status_code == 404
    for action in ("drop", "silence", "resume", "revoke"):
        missing = sim_post(sim, f"accounts/key_nobody/{action}")
        assert missing.status_code == 404
        assert "key_nobody" in missing.json()["error"]
    assert (
        sim_post(sim, "accounts/key_nobody/token", {"access_token": "x"}).status_code
        == 404
    )

    probe = start_probe(sim.ws_url, [ticker()], seconds=2.0)
    try:
        [connection] = wait_for(lambda: live(sim))
        path = f"connections/{connection['id']}/drop"
        for body in ({"code": 1005}, {"code": "1000"}, {"code": True}, {"code": 999}):
            assert sim_post(sim, path, body).status_code == 400, body
        not_json = requests.post(sim.rest_url + "_sim/" + path, data="{", timeout=5)
        assert not_json.status_code == 400
        assert sim_post(sim, "accounts/key_alpha/token", {}).status_code == 400
        assert [c["id"] for c in live(sim)] == [connection["id"]]
    finally:
        finish(probe)


# -- silence -----------------------------------------------------------------


def test_a_silenced_connection_stays_open_and_sends_nothing_until_resumed(sim):
    streaming = ticker(actions=[[0, "subscribe", [INDEX]]])
    idle = ticker()
    probe = start_probe(sim.ws_url, [streaming, idle], seconds=5.0)
    try:
        subscribed_connection(sim, {INDEX: "quote"})
        wait_for(
            lambda: all(c["frames_sent"] + c["heartbeats_sent"] for c in live(sim))
        )
        silenced = sim_post(sim, "accounts/key_alpha/silence")
        time.sleep(0.3)
        quiet = {c["id"]: c for c in live(sim)}
        time.sleep(2.0)
        still = {c["id"]: c for c in live(sim)}
        resuming_at = time.time()
        resumed = sim_post(sim, "accounts/key_alpha/resume")
        resumed_at = time.time()
        wait_for(lambda: all(c["last_sent_at"] > resumed_at for c in live(sim)))
        after = live(sim)
    finally:
        seen = finish(probe)

    assert sorted(silenced.json()) == sorted(quiet) == sorted(still)
    for connection_id, connection in still.items():
        assert connection["silenced"] is True
        silenced_at = connection["silenced_at"]
        for counter in ("frames_sent", "heartbeats_sent", "bytes_sent"):
            assert connection[counter] == quiet[connection_id][counter], counter
        # A frame already on its way when the switch flipped may land just after.
        assert connection["last_sent_at"] < silenced_at + 0.2
    assert sorted(resumed.json()) == sorted(still)
    assert all(c["silenced"] is False and c["silenced_at"] is None for c in after)
    assert {c["id"] for c in after} == set(still), "silence must not close anything"
    for record in seen:
        assert record["connects"] == 1 and record["closes"] == []
        gap = [t for t in record["frames_at"] if silenced_at + 0.2 < t < resuming_at]
        assert gap == []
        assert any(t > resumed_at for t in record["frames_at"])
    streamed = seen[0]
    late_ticks = [t for t in streamed["frames_at"] if t > resumed_at]
    assert len(late_ticks) >= 3
    assert seen[1]["heartbeats"] >= 2


def test_silence_is_per_connection_and_spares_a_reconnected_socket(sim):
    plan = [ticker(actions=[[0, "subscribe", [CALL]]], every_connect=False), ticker()]
    probe = start_probe(sim.ws_url, plan, seconds=5.0)
    try:
        first = subscribed_connection(sim, {CALL: "quote"})
        [other] = wait_for(lambda: [c for c in live(sim) if c["id"] != first["id"]])
        silenced = sim_post(sim, f"connections/{first['id']}/silence").json()
        time.sleep(0.3)
        other_before = sim_get(sim, f"connections/{other['id']}")
        time.sleep(1.2)
        other_after = sim_get(sim, f"connections/{other['id']}")

        # A watchdog on the client side would give up and reconnect: cut it.
        sim_post(sim, f"connections/{first['id']}/drop")
        [fresh] = wait_for(
            lambda: [
                c
                for c in live(sim)
                if c["id"] not in (first["id"], other["id"]) and c["ticks_sent"] > 3
            ],
            RECONNECT_WAIT_S,
        )
    finally:
        seen = finish(probe)

    assert silenced["silenced"] is True and silenced["id"] == first["id"]
    assert other_after["silenced"] is False
    assert other_after["heartbeats_sent"] > other_before["heartbeats_sent"]
    assert fresh["silenced"] is False
    assert fresh["subscriptions"] == {str(CALL): "quote"}
    assert seen[0]["connects"] == 2


# -- token revocation --------------------------------------------------------


def test_a_revoked_token_drops_the_socket_and_is_refused_on_reconnect_and_rest(sim):
    probe = start_probe(
        sim.ws_url, [ticker(actions=[[0, "subscribe", [CALL]]])], seconds=5.0
    )
    try:
        connection = subscribed_connection(sim, {CALL: "quote"})
        revoked = sim_post(sim, "accounts/key_alpha/revoke")
        closed = wait_for(
            lambda: [c for c in sim_get(sim, "closed") if c["id"] == connection["id"]]
        )
        with pytest.raises(TokenException) as refused:
            client(sim, "tok_alpha").instruments("NFO")
        beta_still_works = client(sim, "tok_beta", "key_beta").instruments("NFO")
    finally:
        [seen] = finish(probe)

    assert revoked.status_code == 200
    assert revoked.json() == {
        "api_key": "key_alpha",
        "account_id": "alpha",
        "state": "revoked",
        "access_token": "tok…",
        "retired_tokens": 1,
        "live_connections": 0,
        "max_connections": 3,
        "dropped": [connection["id"]],
    }
    assert closed[0]["closed_by"] == "abort" and closed[0]["reason"] == "revoked"
    assert refused.value.code == 403
    assert beta_still_works
    assert seen["connects"] == 1
    assert seen["closes"][0][0] == 1006
    retries = [r for _, r in seen["errors"][1:]] + [r for _, r in seen["closes"][1:]]
    assert retries and all("403 - Forbidden" in r for r in retries), seen["errors"]
    assert sim_get(sim, "stats")["refused_forbidden"] >= 1
    assert live(sim) == []


def test_a_new_token_works_and_the_revoked_one_stays_refused(sim):
    sim_post(sim, "accounts/key_alpha/revoke")

    installed = sim_post(sim, "accounts/key_alpha/token", {"access_token": "tok_new_1"})
    reused = sim_post(sim, "accounts/key_alpha/token", {"access_token": "tok_alpha"})
    fresh, stale = run_probe(
        sim.ws_url,
        [
            ticker(access_token="tok_new_1", actions=[[0, "subscribe", [CALL]]]),
            ticker(access_token="tok_alpha"),
        ],
        seconds=1.5,
    )

    assert installed.status_code == 200
    assert installed.json()["state"] == "valid"
    assert installed.json()["access_token"] == "tok…"
    assert reused.status_code == 409
    assert "tok_alpha" not in reused.text
    assert fresh["connects"] == 1 and fresh["ticks"]
    assert stale["connects"] == 0
    assert any("403" in reason for _, reason in stale["errors"]), stale["errors"]
    assert client(sim, "tok_new_1").instruments("NFO")
    with pytest.raises(TokenException):
        client(sim, "tok_alpha").instruments("NFO")


def test_replacing_a_valid_token_retires_the_old_one(sim):
    replaced = sim_post(sim, "accounts/key_beta/token", {"access_token": "tok_beta_2"})

    assert replaced.json()["retired_tokens"] == 1
    assert client(sim, "tok_beta_2", "key_beta").instruments("NFO")
    with pytest.raises(TokenException):
        client(sim, "tok_beta", "key_beta").instruments("NFO")


def test_the_accounts_view_masks_every_access_token(sim):
    sim_post(sim, "accounts/key_beta/revoke")

    response = requests.get(sim.rest_url + "_sim/accounts", timeout=5)

    accounts = {a["api_key"]: a for a in response.json()}
    assert accounts["key_alpha"]["state"] == "valid"
    assert accounts["key_beta"]["state"] == "revoked"
    assert {a["access_token"] for a in accounts.values()} == {"tok…"}
    assert not re.search("tok_alpha|tok_beta", response.text)


# -- how connections end -----------------------------------------------------


def test_the_closed_list_records_the_code_a_client_closed_with(sim):
    plan = [
        ticker(actions=[[0.3, "close", 1000]]),
        ticker("key_beta", "tok_beta", actions=[[0.3, "close", 4001, "bye"]]),
    ]
    started = time.time()

    run_probe(sim.ws_url, plan, seconds=1.0)
    closed = wait_for(
        lambda: len(sim_get(sim, "closed")) == 2 and sim_get(sim, "closed")
    )

    by_key = {c["api_key"]: c for c in closed}
    assert by_key["key_alpha"]["close_code"] == 1000
    assert by_key["key_beta"]["close_code"] == 4001
    for record in closed:
        assert record["closed_by"] == "client"
        assert started < record["at"] < started + 5
        assert record["at"] > record["connected_at"]
    assert sim_get(sim, "closed", api_key="key_beta") == [by_key["key_beta"]]


def test_a_client_that_vanishes_is_recorded_as_an_abort(sim):
    probe = start_probe(sim.ws_url, [ticker()], seconds=30.0)
    [connection] = wait_for(lambda: live(sim))

    probe.kill()
    probe.communicate(timeout=30)
    [record] = wait_for(lambda: sim_get(sim, "closed"))

    assert record["id"] == connection["id"]
    assert record["closed_by"] == "abort"
    assert record["close_code"] is None
    assert record["reason"] == "connection lost"


def test_stopping_the_simulator_is_recorded_as_a_server_close(sim):
    probe = start_probe(sim.ws_url, [ticker()], seconds=2.0)
    try:
        [connection] = wait_for(lambda: live(sim))
        registry = sim.simulator.registry
    finally:
        sim.stop()
        [seen] = finish(probe)

    [record] = registry.closed()
    assert record["id"] == connection["id"]
    assert (record["closed_by"], record["server_code"]) == ("server", 1000)
    assert record["reason"] == "shutdown"
    assert seen["closes"][0][0] == 1000

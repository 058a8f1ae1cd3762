"""The connection registry: ids, silence, and how each connection ended."""

from __future__ import annotations

import asyncio

import pytest

from ticker.simulator import connections as connections_module
from ticker.simulator.connections import ConnectionRegistry
from ticker.simulator.credentials import Credential
from ticker.simulator.subscriptions import Subscriptions

ALPHA = Credential("alpha", "key_alpha", "tok_alpha", 10, 3)


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeSocket:
    def __init__(self) -> None:
        self.closed_with: tuple[int, bytes] | None = None

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed_with = (code, message)


def open_one(registry: ConnectionRegistry, credential: Credential = ALPHA):
    connection = registry.open(credential, "127.0.0.1", Subscriptions(10, {1, 2}))
    assert connection is not None
    return connection


def test_ids_are_never_reused_so_a_reconnect_gets_a_new_one():
    registry = ConnectionRegistry()
    first = open_one(registry)
    registry.close(first, 1000)

    second = open_one(registry)

    assert second.id > first.id
    assert registry.get(first.id) is None


def test_a_close_the_client_began_keeps_its_code():
    registry = ConnectionRegistry()
    connection = open_one(registry)

    closure = registry.close(connection, 4001)

    assert (closure.closed_by, closure.close_code, closure.reason) == (
        "client",
        4001,
        "client closed",
    )
    [record] = registry.closed()
    assert record["id"] == connection.id and record["close_code"] == 4001
    assert registry.stats()["connections_closed"] == 1


def test_a_connection_lost_without_a_close_frame_is_an_abort():
    registry = ConnectionRegistry()
    connection = open_one(registry)

    closure = registry.close(connection)

    assert (closure.closed_by, closure.close_code) == ("abort", None)
    assert closure.reason == "connection lost"


def test_an_abort_by_the_simulator_cuts_the_transport_and_says_why():
    registry = ConnectionRegistry()
    connection = open_one(registry)
    connection.transport = FakeTransport()

    connection.abort("revoked")
    # The client never gets to send a close frame; its handler then finishes.
    closure = registry.close(connection)

    assert connection.transport.aborted
    assert (closure.closed_by, closure.reason, closure.close_code) == (
        "abort",
        "revoked",
        None,
    )


def test_a_server_close_records_the_code_sent_not_the_clients_echo():
    registry = ConnectionRegistry()
    connection = open_one(registry)
    connection.socket = FakeSocket()

    asyncio.run(connection.close(1000, b"bye", "drop"))
    # The client answers the handshake with its own close frame.
    closure = registry.close(connection, 1000)

    assert connection.socket.closed_with == (1000, b"bye")
    assert (closure.closed_by, closure.close_code, closure.server_code) == (
        "server",
        None,
        1000,
    )
    snapshot = connection.snapshot()
    assert snapshot["closed_by"] == "server" and snapshot["close_reason"] == "drop"


def test_waiting_for_a_close_returns_once_the_connection_is_settled():
    async def scenario() -> tuple[bool, bool]:
        registry = ConnectionRegistry()
        connection = open_one(registry)
        early = await connection.wait_closed(0.01)
        asyncio.get_running_loop().call_soon(registry.close, connection)
        return early, await connection.wait_closed(1.0)

    assert asyncio.run(scenario()) == (False, True)


def test_silence_shows_in_the_snapshot_until_resumed():
    connection = open_one(ConnectionRegistry())

    connection.silence()
    silenced = connection.snapshot()
    connection.silence()
    again = connection.snapshot()
    connection.resume()

    assert silenced["silenced"] is True and silenced["silenced_at"] is not None
    assert again["silenced_at"] == silenced["silenced_at"]
    assert connection.snapshot()["silenced"] is False
    assert connection.snapshot()["silenced_at"] is None


def test_sending_sets_the_last_sent_time():
    connection = open_one(ConnectionRegistry())
    assert connection.snapshot()["last_sent_at"] is None

    connection.record_heartbeat()

    assert connection.snapshot()["last_sent_at"] is not None


def test_the_closed_list_keeps_only_the_latest(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(connections_module, "CLOSED_KEPT", 2)
    registry = ConnectionRegistry()
    opened = [open_one(registry) for _ in range(3)]

    for connection in opened:
        registry.close(connection, 1000)

    assert [r["id"] for r in registry.closed()] == [c.id for c in opened[1:]]
    assert registry.stats()["connections_closed"] == 3


def test_an_api_key_lists_only_its_own_live_connections():
    registry = ConnectionRegistry()
    beta = Credential("beta", "key_beta", "tok_beta", 10, 3)
    mine = [open_one(registry), open_one(registry)]
    open_one(registry, beta)

    assert registry.of("key_alpha") == mine
    assert registry.of("key_nobody") == []

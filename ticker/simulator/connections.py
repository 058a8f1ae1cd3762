"""The live ticker connections, their counters, and the per-api_key limit.

Everything the debug API reports about connections lives here. A connection keeps
the text frames it received so tests can check what a client actually sent
(for example that a subscribe went out once, not twice after a reconnect). Each is
recorded as `{"at": unix time, "text": the frame, "message": its JSON or None}`.

Ids are never reused, so a client that reconnects shows up under a new id and its
second connection's messages are not mixed with its first's.

How each connection ended is recorded too (`Closure`), and the registry keeps a
bounded list of the latest ones, so a test can ask whether a client closed its
socket cleanly, and with which code, after the connection is gone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ticker.simulator.credentials import Credential
from ticker.simulator.subscriptions import Subscriptions

if TYPE_CHECKING:
    from aiohttp import web

# Received text frames kept per connection; older ones are dropped, counted still.
MESSAGES_KEPT = 10_000
ERRORS_KEPT = 1_000
# Closed connections remembered for GET /_sim/closed; older ones are forgotten.
CLOSED_KEPT = 1_000

ClosedBy = Literal["client", "server", "abort"]


@dataclass(frozen=True, slots=True)
class Closure:
    """How a connection ended.

    `closed_by` is "client" for a close handshake the client began, "server" for
    one the simulator began, and "abort" when the TCP connection went away
    without one (a drop switch, a revoked token, or a client that vanished).
    `close_code` is the code the client sent, and only when it began the close.
    """

    at: float
    closed_by: ClosedBy
    close_code: int | None
    reason: str
    # The code the simulator sent when it began the close itself.
    server_code: int | None = None


@dataclass(frozen=True, slots=True)
class _Ending:
    """What the simulator meant to do when it ended a connection itself."""

    closed_by: ClosedBy
    reason: str
    server_code: int | None = None


@dataclass(eq=False)
class Connection:
    """One accepted WebSocket and what has passed over it."""

    id: int
    credential: Credential
    peer: str
    subscriptions: Subscriptions
    socket: web.WebSocketResponse | None = None
    # For ending the connection without a close handshake.
    transport: asyncio.Transport | None = None
    connected_at: float = field(default_factory=time.time)
    frames_sent: int = 0
    ticks_sent: int = 0
    heartbeats_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    messages: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=MESSAGES_KEPT)
    )
    errors_sent: deque[str] = field(default_factory=lambda: deque(maxlen=ERRORS_KEPT))
    # Monotonic time of the last frame of any kind, for heartbeat pacing.
    last_sent_at: float = field(default_factory=time.monotonic)
    # Unix time of the same, for the snapshot; None until something is sent.
    last_sent_unix: float | None = None
    # Unix time a silence switch began, None while the connection may send.
    silenced_at: float | None = None
    closure: Closure | None = field(default=None, init=False)
    _ending: _Ending | None = field(default=None, init=False, repr=False)
    _finished: asyncio.Event = field(
        default_factory=asyncio.Event, init=False, repr=False
    )

    @property
    def api_key(self) -> str:
        return self.credential.api_key

    @property
    def silenced(self) -> bool:
        return self.silenced_at is not None

    def record_message(self, text: str) -> None:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        self.messages_received += 1
        self.messages.append({"at": time.time(), "text": text, "message": parsed})

    def record_frame(self, ticks: int, size: int) -> None:
        self.frames_sent += 1
        self.ticks_sent += ticks
        self.bytes_sent += size
        self._record_sent()

    def record_heartbeat(self) -> None:
        self.heartbeats_sent += 1
        self.bytes_sent += 1
        self._record_sent()

    def _record_sent(self) -> None:
        self.last_sent_at = time.monotonic()
        self.last_sent_unix = time.time()

    def idle_s(self) -> float:
        return time.monotonic() - self.last_sent_at

    @property
    def ended_by_simulator(self) -> bool:
        """Whether a switch or shutdown has begun ending this connection."""
        return self._ending is not None

    def silence(self) -> None:
        """Send nothing from now on, heartbeats included, but keep reading."""
        if self.silenced_at is None:
            self.silenced_at = time.time()

    def resume(self) -> None:
        self.silenced_at = None

    def abort(self, reason: str) -> None:
        """Cut the TCP connection with no close frame: the client sees 1006."""
        if self._ending is None:
            self._ending = _Ending("abort", reason)
        if self.transport is not None:
            self.transport.abort()

    async def close(self, code: int, message: bytes, reason: str) -> None:
        """Begin a close handshake with `code`, as Kite does when it ends a session."""
        if self._ending is None:
            self._ending = _Ending("server", reason, code)
        if self.socket is not None:
            await self.socket.close(code=code, message=message)

    def settle(self, client_code: int | None) -> Closure:
        """Record how the connection ended, once its handler is done with it.

        `client_code` is the code of a close frame the client sent, if it sent one.
        """
        if self.closure is not None:
            return self.closure
        ending = self._ending
        if ending is not None:
            closure = Closure(
                time.time(), ending.closed_by, None, ending.reason, ending.server_code
            )
        elif client_code is not None:
            closure = Closure(time.time(), "client", client_code, "client closed")
        else:
            closure = Closure(time.time(), "abort", None, "connection lost")
        self.closure = closure
        self._finished.set()
        return closure

    async def wait_closed(self, timeout_s: float) -> bool:
        """Whether the connection's handler finished within `timeout_s`."""
        try:
            await asyncio.wait_for(self._finished.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def closed_record(self) -> dict[str, Any]:
        """The short account of a closed connection that GET /_sim/closed lists."""
        closure = self.closure
        return {
            "id": self.id,
            "account_id": self.credential.account_id,
            "api_key": self.api_key,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "at": None if closure is None else closure.at,
            "close_code": None if closure is None else closure.close_code,
            "closed_by": None if closure is None else closure.closed_by,
            "reason": None if closure is None else closure.reason,
            "server_code": None if closure is None else closure.server_code,
            "messages_received": self.messages_received,
            "frames_sent": self.frames_sent,
            "ticks_sent": self.ticks_sent,
        }

    def snapshot(self) -> dict[str, Any]:
        closure = self.closure
        return {
            "id": self.id,
            "account_id": self.credential.account_id,
            "api_key": self.api_key,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "subscription_limit": self.subscriptions.limit,
            "subscriptions": {str(t): m for t, m in self.subscriptions.modes.items()},
            "frames_sent": self.frames_sent,
            "ticks_sent": self.ticks_sent,
            "heartbeats_sent": self.heartbeats_sent,
            "bytes_sent": self.bytes_sent,
            "last_sent_at": self.last_sent_unix,
            "messages_received": self.messages_received,
            "messages": list(self.messages),
            "errors_sent": list(self.errors_sent),
            "silenced": self.silenced,
            "silenced_at": self.silenced_at,
            "closed_at": None if closure is None else closure.at,
            "close_code": None if closure is None else closure.close_code,
            "closed_by": None if closure is None else closure.closed_by,
            "close_reason": None if closure is None else closure.reason,
        }


_COUNTERS = ("frames_sent", "ticks_sent", "heartbeats_sent", "bytes_sent")


class ConnectionRegistry:
    """Live connections by id, the latest closed ones, and closed totals."""

    def __init__(self) -> None:
        self._live: dict[int, Connection] = {}
        self._closed: deque[dict[str, Any]] = deque(maxlen=CLOSED_KEPT)
        self._next_id = 1
        self.accepted = 0
        self.refused_forbidden = 0
        self.refused_too_many = 0
        self._closed_totals = dict.fromkeys(_COUNTERS, 0)
        self._started_at = time.time()

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)

    def get(self, connection_id: int) -> Connection | None:
        return self._live.get(connection_id)

    def of(self, api_key: str) -> list[Connection]:
        """The live connections of one api_key, oldest first."""
        return [c for c in self._live.values() if c.api_key == api_key]

    def count(self, api_key: str) -> int:
        return sum(1 for c in self._live.values() if c.api_key == api_key)

    def open(
        self, credential: Credential, peer: str, subscriptions: Subscriptions
    ) -> Connection | None:
        """Register a connection, or None when its api_key has no connection left.

        Checking and registering happen in one synchronous step, so concurrent
        upgrades cannot both take the last slot.
        """
        if self.count(credential.api_key) >= credential.max_connections:
            self.refused_too_many += 1
            return None
        connection = Connection(self._next_id, credential, peer, subscriptions)
        self._next_id += 1
        self._live[connection.id] = connection
        self.accepted += 1
        return connection

    def close(self, connection: Connection, client_code: int | None = None) -> Closure:
        """Forget a live connection, keeping its counters and how it ended."""
        closure = connection.settle(client_code)
        if self._live.pop(connection.id, None) is None:
            return closure
        self._closed.append(connection.closed_record())
        for name in _COUNTERS:
            self._closed_totals[name] += getattr(connection, name)
        return closure

    def closed(self) -> list[dict[str, Any]]:
        """The latest closed connections, oldest first."""
        return list(self._closed)

    def stats(self) -> dict[str, Any]:
        """Simulator-wide counters, closed connections included."""
        totals = dict(self._closed_totals)
        for connection in self._live.values():
            for name in _COUNTERS:
                totals[name] += getattr(connection, name)
        return {
            "uptime_s": round(time.time() - self._started_at, 3),
            "connections_live": len(self._live),
            "connections_accepted": self.accepted,
            "connections_closed": self.accepted - len(self._live),
            "refused_forbidden": self.refused_forbidden,
            "refused_too_many": self.refused_too_many,
            **totals,
        }

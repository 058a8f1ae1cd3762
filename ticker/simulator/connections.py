"""The live ticker connections, their counters, and the per-api_key limit.

Everything the debug API reports about connections lives here. A connection keeps
the text frames it received so tests can check what a client actually sent
(for example that a subscribe went out once, not twice after a reconnect). Each is
recorded as `{"at": unix time, "text": the frame, "message": its JSON or None}`.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ticker.simulator.credentials import Credential
from ticker.simulator.subscriptions import Subscriptions

if TYPE_CHECKING:
    from aiohttp import web

# Received text frames kept per connection; older ones are dropped, counted still.
MESSAGES_KEPT = 10_000
ERRORS_KEPT = 1_000


@dataclass(eq=False)
class Connection:
    """One accepted WebSocket and what has passed over it."""

    id: int
    credential: Credential
    peer: str
    subscriptions: Subscriptions
    socket: web.WebSocketResponse | None = None
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

    @property
    def api_key(self) -> str:
        return self.credential.api_key

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
        self.last_sent_at = time.monotonic()

    def record_heartbeat(self) -> None:
        self.heartbeats_sent += 1
        self.bytes_sent += 1
        self.last_sent_at = time.monotonic()

    def idle_s(self) -> float:
        return time.monotonic() - self.last_sent_at

    def snapshot(self) -> dict[str, Any]:
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
            "messages_received": self.messages_received,
            "messages": list(self.messages),
            "errors_sent": list(self.errors_sent),
        }


_COUNTERS = ("frames_sent", "ticks_sent", "heartbeats_sent", "bytes_sent")


class ConnectionRegistry:
    """Live connections by id, and the totals of those already closed."""

    def __init__(self) -> None:
        self._live: dict[int, Connection] = {}
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

    def close(self, connection: Connection) -> None:
        if self._live.pop(connection.id, None) is None:
            return
        for name in _COUNTERS:
            self._closed_totals[name] += getattr(connection, name)

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
            "refused_forbidden": self.refused_forbidden,
            "refused_too_many": self.refused_too_many,
            **totals,
        }

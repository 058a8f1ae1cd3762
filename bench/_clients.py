"""What a trading back end does, as cheaply as a benchmark can do it.

`Api` speaks HTTP to the service, `EventWatch` times lifecycle events, and `TickTap`
reads the ticks channel over a raw socket. The machine has two cores shared with the
stack, so the tap never decodes a tick with a Redis client: it counts RESP message
headers, or pulls the token out of each message with one regular expression.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from array import array
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson
import redis

CREATED = "subscription_created"
REMOVED = "subscription_removed"
HTTP_TIMEOUT_S = 30.0


class Api:
    """One back end's HTTP client; not shared between threads."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)

    def subscribe(self, token: int, mode: str = "FULL") -> tuple[int, dict[str, Any]]:
        body = json.dumps({"instrument_token": token, "requested_mode": mode})
        return self._call("POST", "/subscriptions", body)

    def subscribe_batch(self, tokens: Sequence[int], mode: str = "FULL"
                        ) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"instruments": [{"instrument_token": t} for t in tokens],
                           "requested_mode": mode})
        return self._call("POST", "/subscriptions/batch", body)

    def unsubscribe(self, token: int) -> tuple[int, dict[str, Any]]:
        return self._call("DELETE", f"/subscriptions/{token}")

    def get(self, path: str) -> tuple[int, Any]:
        return self._call("GET", path)

    def _call(self, method: str, path: str, body: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            try:
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # gunicorn's sync workers close after each answer; reconnect once.
                self._connection.close()
                if attempt == 2:
                    raise
        if response.will_close:
            self._connection.close()
        return response.status, orjson.loads(payload) if payload else None


def get_json(url: str) -> Any:
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request("GET", parsed.path + (f"?{parsed.query}" if parsed.query else ""))
        response = connection.getresponse()
        return orjson.loads(response.read())
    finally:
        connection.close()


class _Expected:
    __slots__ = ("at", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.at = 0.0


class EventWatch:
    """Arrival times (time.monotonic) of lifecycle events, by type and token.

    Register what you expect before you act (`expect`), so no event can slip by
    between the request and the wait.
    """

    def __init__(self, redis_url: str, channel: str) -> None:
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(channel)
        # The confirmation says the subscription is in place on the server.
        while True:
            message = self._pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "subscribe":
                break
        self._expected: dict[tuple[str, int], _Expected] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.counts: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="event-watch", daemon=True)
        self._thread.start()

    def expect(self, event_type: str, token: int) -> _Expected:
        with self._lock:
            return self._expected.setdefault((event_type, token), _Expected())

    def wait(self, event_type: str, token: int, timeout_s: float) -> float | None:
        expected = self.expect(event_type, token)
        return expected.at if expected.done.wait(timeout_s) else None

    def wait_all(self, event_type: str, tokens: Iterable[int], timeout_s: float) -> list[int]:
        """Tokens whose event did not arrive within `timeout_s` in all."""
        deadline = time.monotonic() + timeout_s
        missing = []
        for token in tokens:
            if not self.expect(event_type, token).done.wait(max(deadline - time.monotonic(), 0)):
                missing.append(token)
        return missing

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(2)
        self._pubsub.close()
        self._client.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            message = self._pubsub.get_message(timeout=0.5)
            if message is None or message["type"] != "message":
                continue
            arrived = time.monotonic()
            event = orjson.loads(message["data"])
            kind = event["event_type"]
            self.counts[kind] = self.counts.get(kind, 0) + 1
            expected = self.expect(kind, event["instrument_token"])
            if not expected.done.is_set():
                expected.at = arrived
                expected.done.set()


_MESSAGE_MARK = b"\r\nmessage\r\n"
_TOKEN = re.compile(rb'"instrument_token":(\d+)')
_PAYLOAD_END = b"}\r\n"


class TickTap:
    """Tick messages on the ticks channel, read from a raw Redis socket.

    `count` mode only counts messages (a RESP header search over each chunk, at C
    speed). `tokens` mode also records, for every tick, its token and the time the
    chunk holding it arrived; all messages of one chunk share that time, which is
    when the benchmark could first have seen them.
    """

    RECV_BYTES = 1 << 20

    def __init__(self, redis_url: str, channel: str, mode: str = "count") -> None:
        if mode not in ("count", "tokens"):
            raise ValueError(f"tap mode must be 'count' or 'tokens', got {mode!r}")
        parsed = urlparse(redis_url)
        self._mode = mode
        self._sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        name = channel.encode()
        self._sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(name), name))
        self._pending = self._await_confirmation()
        self.count = 0
        self.times = array("d")
        self.tokens = array("Q")
        self.disconnected = False
        self.recording = mode == "tokens"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tick-tap", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(3)
        self._sock.close()

    def settle(self, quiet_s: float = 1.0, timeout_s: float = 30.0) -> int:
        """Wait until no message arrived for `quiet_s`; the count then."""
        deadline = time.monotonic() + timeout_s
        last = -1
        while time.monotonic() < deadline:
            if self.count == last:
                return last
            last = self.count
            time.sleep(quiet_s)
        return self.count

    def clear(self) -> None:
        """Forget recorded arrivals (the count keeps running)."""
        self.times = array("d")
        self.tokens = array("Q")

    def _await_confirmation(self) -> bytes:
        data = b""
        while b":1\r\n" not in data:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError("Redis closed the tap's connection at SUBSCRIBE")
            data += chunk
        return data[data.index(b":1\r\n") + 4 :]

    def _run(self) -> None:
        carry = self._pending
        tail = b""
        recv = self._sock.recv
        while not self._stopping.is_set():
            try:
                chunk = recv(self.RECV_BYTES)
            except OSError:
                chunk = b""
            if not chunk:
                self.disconnected = not self._stopping.is_set()
                return
            arrived = time.monotonic()
            if self._mode == "count":
                self.count += (tail + chunk).count(_MESSAGE_MARK)
                tail = chunk[-(len(_MESSAGE_MARK) - 1) :]
                continue
            data = carry + chunk
            end = data.rfind(_PAYLOAD_END)
            if end < 0:
                carry = data
                continue
            complete, carry = data[: end + 3], data[end + 3 :]
            found = [int(m) for m in _TOKEN.findall(complete)]
            self.count += len(found)
            if self.recording:
                self.tokens.extend(found)
                self.times.extend([arrived] * len(found))


def sleep_until_before_cycle(interval_s: float, lead_s: float) -> None:
    """Sleep until `lead_s` before the simulator's next tick cycle starts.

    The simulator starts cycle n at n * interval on CLOCK_MONOTONIC, which every
    process of the machine shares, so the boundary is known here to the microsecond.
    """
    now = time.monotonic()
    boundary = (int(now / interval_s) + 1) * interval_s
    if boundary - lead_s - now < 0.3 * interval_s:
        boundary += interval_s
    time.sleep(max(boundary - lead_s - time.monotonic(), 0))


@dataclass
class PlaceResult:
    seconds: float
    refused: dict[int, int]
    missing: list[int]


def place_many(port: int, watch: EventWatch, tokens: Sequence[int], mode: str = "FULL",
               clients: int = 16, timeout_s: float = 600.0) -> PlaceResult:
    """POST every token from `clients` threads, then wait for all their creations."""
    for token in tokens:
        watch.expect(CREATED, token)
    refused: dict[int, int] = {}
    started = time.monotonic()

    def post(share: Sequence[int]) -> None:
        api = Api(port)
        for token in share:
            status, _ = api.subscribe(token, mode)
            if status not in (200, 202):
                refused[token] = status

    shares = [tokens[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, shares))
    missing = watch.wait_all(CREATED, [t for t in tokens if t not in refused], timeout_s)
    return PlaceResult(time.monotonic() - started, refused, missing)


def remove_many(port: int, watch: EventWatch, tokens: Sequence[int], clients: int = 16,
                timeout_s: float = 600.0) -> PlaceResult:
    """DELETE every token from `clients` threads, then wait for all their removals."""
    for token in tokens:
        watch.expect(REMOVED, token)
    refused: dict[int, int] = {}
    started = time.monotonic()

    def delete(share: Sequence[int]) -> None:
        api = Api(port)
        for token in share:
            status, _ = api.unsubscribe(token)
            if status != 202:
                refused[token] = status

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(delete, [tokens[i::clients] for i in range(clients)]))
    missing = watch.wait_all(REMOVED, [t for t in tokens if t not in refused], timeout_s)
    return PlaceResult(time.monotonic() - started, refused, missing)


def worker_state(client: redis.Redis, key: str) -> dict[str, Any]:
    raw = client.get(key)
    return orjson.loads(raw) if raw else {}

"""Collects what a Redis pub/sub channel carries, for tests to wait on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

Message = dict[str, Any]


class ChannelListener:
    """Every JSON message published on a channel since `start`, with arrival times."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self._pubsub = redis.Redis.from_url(redis_url).pubsub()
        self._channel = channel
        self.messages: list[tuple[float, Message]] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ChannelListener:
        self._pubsub.subscribe(**{self._channel: self._on_message})
        # The server's confirmation means nothing published from now on is missed.
        deadline = time.monotonic() + 5
        while True:
            reply = self._pubsub.get_message(timeout=0.5)
            if reply is not None and reply["type"] == "subscribe":
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no subscribe confirmation for {self._channel}")
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(timeout=2)
        self._pubsub.close()

    def _on_message(self, raw: dict[str, Any]) -> None:
        with self._changed:
            self.messages.append((time.monotonic(), orjson.loads(raw["data"])))
            self._changed.notify_all()

    def matching(self, predicate: Callable[[Message], bool]) -> list[Message]:
        with self._changed:
            return [m for _, m in self.messages if predicate(m)]

    def wait_for(self, predicate: Callable[[Message], bool], timeout_s: float,
                 count: int = 1) -> list[Message]:
        """The first `count` matching messages, failing after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [m for _, m in self.messages if predicate(m)]
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{len(found)} of {count} expected messages on {self._channel} "
                        f"within {timeout_s}s; last seen: {self.messages[-3:]}"
                    )
                self._changed.wait(remaining)

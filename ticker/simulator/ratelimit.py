"""Kite's per-api_key request limits: a sliding one-second window, as strict as Kite.

Kite answers the request over its limit with HTTP 429 until the window has moved
on. A request counts if it arrived within the last `window_s`; refused requests
are not counted, so a client that backs off gets its turn as soon as the oldest
accepted request leaves the window, while one that keeps hammering is refused
exactly as long as its accepted requests keep the window full.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Final

# Kite's historical route allows this many requests per second and api_key.
HISTORICAL_PER_S: Final = 3.0
WINDOW_S: Final = 1.0


class SlidingWindowLimit:
    """At most `limit` accepted requests per key in any `window_s` seconds."""

    def __init__(
        self,
        limit: int,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(
                f"a rate limit needs limit >= 1 and window_s > 0, got limit={limit!r} "
                f"window_s={window_s!r}"
            )
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._accepted: dict[str, deque[float]] = {}

    @classmethod
    def per_second(cls, rate: float) -> SlidingWindowLimit | None:
        """The limit for `rate` requests a second; None (no limit) for infinity.

        Rates of one and more count whole requests in a one-second window (2.5
        allows 2); a rate below one allows one request per 1/rate seconds.
        """
        if math.isinf(rate) and rate > 0:
            return None
        if not rate > 0:
            raise ValueError(f"a request rate must be positive, got {rate!r}")
        if rate < 1:
            return cls(1, WINDOW_S / rate)
        return cls(math.floor(rate), WINDOW_S)

    def allow(self, key: str) -> bool:
        """Count a request for `key` and say yes, or say no and count nothing."""
        now = self._clock()
        accepted = self._accepted.setdefault(key, deque())
        while accepted and accepted[0] <= now - self.window_s:
            accepted.popleft()
        if len(accepted) >= self.limit:
            return False
        accepted.append(now)
        return True

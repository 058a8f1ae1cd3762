"""The tick schedule shared by every connection.

Time is cut into numbered cycles of `interval_s`. Every connection sends its frame
at the start of a cycle and names the cycle to the market, so all connections see
the same prices for the same cycle and the market moves each instrument once per
cycle, not once per connection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TickClock:
    """Cycle numbers on a monotonic clock."""

    def __init__(
        self, interval_s: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"tick interval must be positive, got {interval_s!r}")
        self.interval_s = interval_s
        self._now = now

    def next_cycle(self) -> int:
        """The number of the next cycle to start."""
        return math.floor(self._now() / self.interval_s) + 1

    def seconds_until(self, cycle: int) -> float:
        """How long until `cycle` starts; zero or less once it has."""
        return cycle * self.interval_s - self._now()

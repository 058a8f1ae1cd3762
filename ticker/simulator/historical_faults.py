"""Historical requests the simulator is told to fail, to exercise the service's retries.

Simulator only. `POST /_sim/accounts/{api_key}/historical-errors {"status": 503,
"count": 2}` makes that api_key's next two historical requests fail as Kite fails
them: its error envelope with that status, which the official client raises as
the exception Kite's `error_type` names.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

# Kite's error_type for each status it answers a historical request with.
ERROR_TYPES = {
    429: "NetworkException",
    500: "GeneralException",
    502: "NetworkException",
    503: "NetworkException",
    504: "NetworkException",
}


class HistoricalFaults:
    def __init__(self) -> None:
        self._pending: defaultdict[str, deque[int]] = defaultdict(deque)
        self._lock = threading.Lock()

    def fail_next(self, api_key: str, status: int, count: int) -> int:
        """Queue `count` failures with `status`; how many are now queued for the key."""
        if status not in ERROR_TYPES:
            raise ValueError(f"status must be one of {sorted(ERROR_TYPES)}, not {status!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count!r}")
        with self._lock:
            self._pending[api_key].extend([status] * count)
            return len(self._pending[api_key])

    def take(self, api_key: str) -> int | None:
        """The status to fail this request with, or None to answer it normally."""
        with self._lock:
            queued = self._pending.get(api_key)
            return queued.popleft() if queued else None

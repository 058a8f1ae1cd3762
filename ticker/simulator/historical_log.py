"""Every historical request the simulator answered, for the debug API.

Tests of the service's backfill ask what it really sent: how fast, with which
api_key, for which spans, and how the simulator answered (429 included). Requests
are kept in arrival order up to `REQUESTS_KEPT`; older ones are dropped from the
list but stay in the per-status counts, which only `clear` resets.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any, Final

REQUESTS_KEPT: Final = 100_000


@dataclass(frozen=True, slots=True)
class HistoricalRequest:
    """One request to the historical route, as it arrived and as it was answered.

    `instrument_token` is the path segment as an int, or the raw text when it is
    not a number; `from` and `to` are the query values exactly as sent.
    """

    at: float
    api_key: str | None
    instrument_token: int | str
    interval: str
    from_: str | None
    to: str | None
    oi: bool
    status: int
    candles: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_")
        return data


class HistoricalLog:
    """The last `REQUESTS_KEPT` historical requests and a count per HTTP status."""

    def __init__(self, kept: int = REQUESTS_KEPT) -> None:
        self._requests: deque[HistoricalRequest] = deque(maxlen=kept)
        self._statuses: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._requests)

    def add(self, request: HistoricalRequest) -> None:
        self._requests.append(request)
        self._statuses[request.status] += 1

    def clear(self) -> None:
        self._requests.clear()
        self._statuses.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        return [request.to_json() for request in self._requests]

    def stats(self) -> dict[str, Any]:
        """Counts since start or the last clear; JSON keys, so statuses as text."""
        return {
            "historical_requests": sum(self._statuses.values()),
            "historical_by_status": {
                str(status): count for status, count in sorted(self._statuses.items())
            },
        }

"""The subscription: one instrument token streamed by one account, in one mode."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Mode(str, enum.Enum):
    """Kite's streaming modes; values are the names Kite's socket protocol uses."""

    LTP = "ltp"
    QUOTE = "quote"
    FULL = "full"

    @classmethod
    def parse(cls, text: str) -> Mode:
        """A mode from any case of its name (LTP, quote, Full...)."""
        return cls(text.strip().lower())

    @property
    def label(self) -> str:
        """The upper-case name the HTTP API and events use."""
        return self.value.upper()

    @property
    def rank(self) -> int:
        """Order by what a mode carries: FULL holds QUOTE, which holds LTP."""
        return _MODE_RANK[self]


_MODE_RANK = {Mode.LTP: 0, Mode.QUOTE: 1, Mode.FULL: 2}

# Kite's instrument tokens are unsigned 32-bit numbers; 0 names nothing.
MAX_INSTRUMENT_TOKEN = 2**32 - 1

# The requester of a request that names none.
DEFAULT_CLIENT_ID = "default"


def highest(modes: list[Mode]) -> Mode:
    """The mode that serves every one of `modes` (the socket carries one per token)."""
    return max(modes, key=lambda mode: mode.rank)


class Status(str, enum.Enum):
    """Where a subscription stands between request and socket."""

    PENDING = "pending"  # accepted, its subscribe not yet applied on the socket
    ACTIVE = "active"  # on the account's socket, ticking
    REMOVING = "removing"  # removal accepted, not yet applied
    REMOVED = "removed"  # off the socket

    @property
    def holds_capacity(self) -> bool:
        """Whether the subscription counts against its account's socket limits."""
        return self is not Status.REMOVED


LIVE_STATUSES = (Status.PENDING, Status.ACTIVE, Status.REMOVING)


@dataclass(frozen=True)
class Subscription:
    instrument_token: int
    tradingsymbol: str
    exchange: str
    segment: str
    account_id: str
    requested_mode: Mode
    applied_mode: Mode | None
    status: Status
    version: int
    task_id: str | None
    created_at: datetime
    updated_at: datetime
    moved_from: str | None = None
    status_reason: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "instrument_token": self.instrument_token,
            "tradingsymbol": self.tradingsymbol,
            "exchange": self.exchange,
            "segment": self.segment,
            "requested_mode": self.requested_mode.label,
            "applied_mode": self.applied_mode.label if self.applied_mode else None,
            "account_id": self.account_id,
            "status": self.status.value,
            "task_id": self.task_id,
            "status_reason": self.status_reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

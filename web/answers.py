"""The shapes of the API's answers, for its OpenAPI document.

The routes build their answers as plain dicts; these models describe them, and the
fuzz test holds every answer against them, so a field added to one must be added here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

ModeLabel = Literal["LTP", "QUOTE", "FULL"]


class _Open(BaseModel):
    # Answers may gain fields; clients should ignore those they do not know.
    model_config = ConfigDict(extra="allow")


class Requester(_Open):
    client_id: str
    requested_mode: ModeLabel


class Subscription(_Open):
    instrument_token: int
    tradingsymbol: str
    exchange: str
    segment: str
    requested_mode: ModeLabel
    applied_mode: ModeLabel | None
    account_id: str
    status: Literal["pending", "active", "removing", "removed"]
    task_id: str | None
    status_reason: str | None
    created_at: str
    updated_at: str
    requesters: list[Requester]


class SubscriptionList(_Open):
    subscriptions: list[Subscription]
    count: int


class Candle(_Open):
    date: str
    open: float
    high: float
    low: float
    close: float
    volume: int
    oi: int | None


class CandleList(_Open):
    instrument_token: int
    interval: str
    candles: list[Candle]
    count: int
    truncated: bool


class Event(_Open):
    stream_id: str
    event_id: str
    event_type: str
    instrument_token: int
    metadata: dict[str, Any]
    timestamp: float
    sequence: int


class EventList(_Open):
    events: list[Event]
    count: int
    last_id: str
    gap: bool


class Account(_Open):
    account_id: str
    capacity: int
    max_instruments_per_connection: int
    max_connections: int
    used: int
    free: int
    worker_alive: bool
    socket_state: str
    connections: list[dict[str, Any]]


class AccountList(_Open):
    accounts: list[Account]


class Health(_Open):
    status: Literal["healthy", "unhealthy"]
    database: str
    redis: str
    workers: dict[str, dict[str, Any]]
    backfill: dict[str, Any]
    failing: list[str] | None = None


class ErrorDetail(BaseModel):
    field: str | None
    reason: str


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None
    field: str | None = None
    details: list[ErrorDetail] | None = None


class Error(BaseModel):
    """Every error the API gives, whatever its status."""

    error: ErrorBody


class ItemRefusal(BaseModel):
    code: str
    message: str
    field: str | None = None


class BatchItem(_Open):
    """One instrument of a batch: queued for the socket, already there, or refused."""

    index: int
    outcome: Literal["queued", "unchanged", "refused"]
    instrument_token: int | None
    subscription: Subscription | None
    error: ItemRefusal | None


class BatchAnswer(_Open):
    client_id: str
    results: list[BatchItem]
    queued: int
    unchanged: int
    refused: int

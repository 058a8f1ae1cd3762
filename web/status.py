"""The operators' live status page: `GET /` and the JSON it polls, `GET /status.json`.

The page is a template with no data in it; its script polls /status.json and fills
the tables with text nodes only, so nothing an instrument or an error carries is
ever parsed as HTML. Both are reads, so, like every read, they need no API key.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from flask import Blueprint, current_app, jsonify, make_response, render_template
from pydantic import BaseModel, ConfigDict, Field

from ticker.fanout import LastPrice
from ticker.service import SubscriptionService
from ticker.status import BackfillOutcome, backfill_outcomes
from ticker.subscriptions import Subscription
from web.answers import Event, ModeLabel
from web.contract import documented

# The template and the script are the app's own: Flask serves web/templates and
# web/static for the `web` package.
status = Blueprint("status", __name__)

# Events scanned for backfill outcomes: recent enough to be cheap on every poll,
# many enough to cover a burst of new subscriptions.
BACKFILL_SCAN_EVENTS = 500
# How often the page polls, in milliseconds; a market tick is about a second apart.
POLL_EVERY_MS = 2000

# Defence in depth behind the script's text-only rendering: the page may run only
# its own script and style, and may not be framed.
CONTENT_SECURITY_POLICY = ("default-src 'self'; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'")


class StatusQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Rows beyond these are counted, not sent: the page stays light at 9,000 tokens.
    subscriptions: int = Field(200, ge=1, le=1000)
    events: int = Field(25, ge=1, le=BACKFILL_SCAN_EVENTS)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class AccountStatus(_Open):
    account_id: str
    capacity: int
    used: int
    free: int
    worker_alive: bool
    socket_state: str
    backlog: int | None
    frames_dropped: int
    refusals: int
    connections: list[dict[str, Any]]


class Backfill(_Open):
    state: Literal["completed", "failed"]
    interval: str | None
    candles_stored: int | None
    candles_received: int | None
    reason: str | None
    at: float


class SubscriptionStatus(_Open):
    instrument_token: int
    tradingsymbol: str
    exchange: str
    requested_mode: ModeLabel
    applied_mode: ModeLabel | None
    account_id: str
    status: Literal["pending", "active", "removing", "removed"]
    status_reason: str | None
    last_price: float | None
    tick_age_s: float | None
    backfill: Backfill | None


class BackfillSummary(_Open):
    completed: int
    failed: int
    unknown: int
    candles_stored: int
    workers: list[str]
    worker_state: Literal["ok", "down", "unknown"]


class Status(_Open):
    generated_at: float
    health: Literal["healthy", "unhealthy"]
    failing: list[str]
    database: str
    redis: str
    accounts: list[AccountStatus]
    subscriptions: list[SubscriptionStatus]
    subscription_count: int
    truncated: bool
    backfill: BackfillSummary
    events: list[Event]


def _service() -> SubscriptionService:
    return current_app.extensions["ticker.service"]  # type: ignore[no-any-return]


@status.get("/")
def page():  # type: ignore[no-untyped-def]
    """The page itself: a frame its script fills from /status.json."""
    html = render_template("status.html", poll_every_ms=POLL_EVERY_MS)
    response = make_response(html)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@status.get("/status.json")
@documented({200: Status}, query=StatusQuery, tags=("operations",))
def status_json(query: StatusQuery):  # type: ignore[no-untyped-def]
    """Everything the status page shows in one read: accounts, subscriptions, events."""
    service = _service()
    health = service.health()
    subscriptions = service.list(None, None)
    shown = subscriptions[: query.subscriptions]
    prices = service.last_prices([s.instrument_token for s in shown])
    # Ages are measured from the moment the prices were read, not the request's start.
    now = time.time()
    recent = service.recent_events(BACKFILL_SCAN_EVENTS)
    backfills = backfill_outcomes(recent)
    return jsonify({
        "generated_at": round(now, 3),
        "health": health["status"],
        "failing": health.get("failing", []),
        "database": health["database"],
        "redis": health["redis"],
        "accounts": _accounts(service.accounts(), health["workers"]),
        "subscriptions": [
            _subscription(s, prices.get(s.instrument_token),
                          backfills.get(s.instrument_token), now)
            for s in shown
        ],
        "subscription_count": len(subscriptions),
        "truncated": len(subscriptions) > len(shown),
        "backfill": _backfill_summary(subscriptions, backfills, health.get("backfill", {})),
        "events": recent[: query.events],
    })


def _subscription(sub: Subscription, price: LastPrice | None,
                  backfill: BackfillOutcome | None, now: float) -> dict[str, Any]:
    row = sub.to_json()
    return {
        "instrument_token": sub.instrument_token,
        "tradingsymbol": sub.tradingsymbol,
        "exchange": sub.exchange,
        "requested_mode": row["requested_mode"],
        "applied_mode": row["applied_mode"],
        "account_id": sub.account_id,
        "status": row["status"],
        "status_reason": sub.status_reason,
        "last_price": price.price if price else None,
        # Clocks of two hosts may differ slightly; an age is never negative.
        "tick_age_s": round(max(now - price.received_at, 0.0), 1) if price else None,
        "backfill": backfill.to_json() if backfill else None,
    }


def _accounts(accounts: list[dict[str, Any]], workers: dict[str, dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """/accounts' rows with /health's backlog and counters for the same account."""
    return [
        {
            **a,
            "backlog": workers.get(a["account_id"], {}).get("backlog"),
            "frames_dropped": workers.get(a["account_id"], {}).get("frames_dropped", 0),
            "refusals": workers.get(a["account_id"], {}).get("refusals", 0),
        }
        for a in accounts
    ]


def _backfill_summary(subscriptions: list[Subscription],
                      backfills: dict[int, BackfillOutcome],
                      health: dict[str, Any]) -> dict[str, Any]:
    outcomes = [backfills.get(s.instrument_token) for s in subscriptions]
    return {
        "workers": health.get("workers", []),
        "worker_state": health.get("state", "unknown"),
        "completed": sum(1 for o in outcomes if o and o.state == "completed"),
        "failed": sum(1 for o in outcomes if o and o.state == "failed"),
        "unknown": sum(1 for o in outcomes if o is None),
        "candles_stored": sum(o.candles_stored or 0 for o in outcomes if o),
    }

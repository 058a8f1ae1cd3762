"""HTTP routes: parse the request, call one service method, shape the answer."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder

from ticker.service import SubscriptionService
from ticker.ticks import IST
from web import answers
from web.contract import documented, parse, spec
from web.schemas import CandlesQuery, EventsQuery, ListQuery, SubscribeRequest, TokenPath

api = Blueprint("api", __name__)


def _service() -> SubscriptionService:
    return current_app.extensions["ticker.service"]  # type: ignore[no-any-return]


def _token(raw: str) -> int:
    return parse(TokenPath, {"instrument_token": raw}).instrument_token  # type: ignore[no-any-return]


@api.get("/metrics")
def metrics():  # type: ignore[no-untyped-def]
    registry = current_app.extensions["ticker.metrics"]
    # The library picks the exposition format the scraper's Accept header asks for.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})


@api.get("/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    return jsonify(spec.spec)


@api.post("/subscriptions")
@documented({200: answers.Subscription, 202: answers.Subscription}, body=SubscribeRequest,
            errors=(404,), writes=True, tags=("subscriptions",))
def create_subscription(body: SubscribeRequest):  # type: ignore[no-untyped-def]
    """Subscribe an instrument (200 when exactly this is already pending or live)."""
    outcome = _service().subscribe(body.instrument_token, body.requested_mode)
    return jsonify(outcome.subscription.to_json()), 202 if outcome.accepted else 200


@api.delete("/subscriptions/<raw_token>")
@documented({202: answers.Subscription}, errors=(404, 422), writes=True,
            tags=("subscriptions",))
def delete_subscription(raw_token: str):  # type: ignore[no-untyped-def]
    subscription = _service().unsubscribe(_token(raw_token))
    return jsonify(subscription.to_json()), 202


@api.get("/subscriptions/<raw_token>")
@documented({200: answers.Subscription}, errors=(404, 422), tags=("subscriptions",))
def get_subscription(raw_token: str):  # type: ignore[no-untyped-def]
    return jsonify(_service().get(_token(raw_token)).to_json())


@api.get("/subscriptions")
@documented({200: answers.SubscriptionList}, query=ListQuery, tags=("subscriptions",))
def list_subscriptions(query: ListQuery):  # type: ignore[no-untyped-def]
    """Pending, active and removing subscriptions, or those of one status."""
    items = _service().list(query.account, query.status)
    return jsonify({"subscriptions": [s.to_json() for s in items], "count": len(items)})


@api.get("/subscriptions/<raw_token>/candles")
@documented({200: answers.CandleList}, query=CandlesQuery, errors=(404,),
            tags=("backfill",))
def list_candles(raw_token: str, query: CandlesQuery):  # type: ignore[no-untyped-def]
    """Stored candles of a subscribed instrument, oldest first."""
    token = _token(raw_token)
    candles, truncated = _service().candles(
        token, query.interval, query.start, query.end, query.limit
    )
    return jsonify({
        "instrument_token": token,
        "interval": query.interval,
        "candles": [
            {
                "date": c.start.astimezone(IST).isoformat(),
                "open": float(c.open),
                "high": float(c.high),
                "low": float(c.low),
                "close": float(c.close),
                "volume": c.volume,
                "oi": c.oi,
            }
            for c in candles
        ],
        "count": len(candles),
        "truncated": truncated,
    })


@api.get("/events")
@documented({200: answers.EventList}, query=EventsQuery, tags=("events",))
def replay_events(query: EventsQuery):  # type: ignore[no-untyped-def]
    """Events after a stream id, oldest first, for a back end that was away."""
    events, gap = _service().events(query.after, query.limit)
    return jsonify({
        "events": events,
        "count": len(events),
        # Where the next page starts: the last event's id, or `after` when none came.
        "last_id": events[-1]["stream_id"] if events else query.after,
        "gap": gap,
    })


@api.get("/accounts")
@documented({200: answers.AccountList}, tags=("operations",))
def list_accounts():  # type: ignore[no-untyped-def]
    return jsonify({"accounts": _service().accounts()})


@api.get("/health")
@documented({200: answers.Health, 503: answers.Health}, tags=("operations",))
def health():  # type: ignore[no-untyped-def]
    report = _service().health()
    return jsonify(report), 200 if report["status"] == "healthy" else 503

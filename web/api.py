"""HTTP routes: parse the request, call one service method, shape the answer."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from ticker.service import SubscriptionService
from ticker.ticks import IST
from web.errors import ApiError, from_validation
from web.schemas import CandlesQuery, EventsQuery, ListQuery, SubscribeRequest, TokenPath

api = Blueprint("api", __name__)


def _service() -> SubscriptionService:
    return current_app.extensions["ticker.service"]  # type: ignore[no-any-return]


def _parse(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, prefix) from None


def _json_body() -> Any:
    if not request.is_json:
        raise ApiError(400, "invalid_json",
                       "send the body as JSON with Content-Type: application/json")
    raw = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if len(raw) >= limit:
        # A chunked body carries no length to refuse up front: the server reads it up
        # to the limit and stops, so reaching the limit means it was too large.
        raise RequestEntityTooLarge(f"the body must be under {limit} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {reason}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json",
                       f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _token(raw: str) -> int:
    return _parse(TokenPath, {"instrument_token": raw}).instrument_token  # type: ignore[no-any-return]


@api.get("/metrics")
def metrics():  # type: ignore[no-untyped-def]
    registry = current_app.extensions["ticker.metrics"]
    # The library picks the exposition format the scraper's Accept header asks for.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})


@api.post("/subscriptions")
def create_subscription():  # type: ignore[no-untyped-def]
    body = _parse(SubscribeRequest, _json_body())
    outcome = _service().subscribe(body.instrument_token, body.requested_mode)
    return jsonify(outcome.subscription.to_json()), 202 if outcome.accepted else 200


@api.delete("/subscriptions/<raw_token>")
def delete_subscription(raw_token: str):  # type: ignore[no-untyped-def]
    subscription = _service().unsubscribe(_token(raw_token))
    return jsonify(subscription.to_json()), 202


@api.get("/subscriptions/<raw_token>")
def get_subscription(raw_token: str):  # type: ignore[no-untyped-def]
    return jsonify(_service().get(_token(raw_token)).to_json())


@api.get("/subscriptions")
def list_subscriptions():  # type: ignore[no-untyped-def]
    query = _parse(ListQuery, request.args.to_dict())
    items = _service().list(query.account, query.status)
    return jsonify({"subscriptions": [s.to_json() for s in items], "count": len(items)})


@api.get("/subscriptions/<raw_token>/candles")
def list_candles(raw_token: str):  # type: ignore[no-untyped-def]
    token = _token(raw_token)
    query = _parse(CandlesQuery, request.args.to_dict())
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
def replay_events():  # type: ignore[no-untyped-def]
    query = _parse(EventsQuery, request.args.to_dict())
    events, gap = _service().events(query.after, query.limit)
    return jsonify({
        "events": events,
        "count": len(events),
        # Where the next page starts: the last event's id, or `after` when none came.
        "last_id": events[-1]["stream_id"] if events else query.after,
        "gap": gap,
    })


@api.get("/accounts")
def list_accounts():  # type: ignore[no-untyped-def]
    return jsonify({"accounts": _service().accounts()})


@api.get("/health")
def health():  # type: ignore[no-untyped-def]
    report = _service().health()
    return jsonify(report), 200 if report["status"] == "healthy" else 503

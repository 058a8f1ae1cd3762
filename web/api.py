"""HTTP routes: parse the request, call one service method, shape the answer."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder
from werkzeug.exceptions import MethodNotAllowed

from ticker.errors import UnknownInstrument
from ticker.service import ChangeOutcome, SubscriptionService
from ticker.subscriptions import Subscription
from ticker.ticks import IST
from web import answers
from web.batch import subscribe_batch
from web.contract import documented, parse, spec
from web.errors import ApiError
from web.schemas import (
    BatchSubscribeRequest,
    CandlesQuery,
    EventsQuery,
    ListQuery,
    ModeChange,
    RequesterQuery,
    SubscribeRequest,
    TokenPath,
)

api = Blueprint("api", __name__)


def _service() -> SubscriptionService:
    return current_app.extensions["ticker.service"]  # type: ignore[no-any-return]


def _token(raw: str) -> int:
    path: TokenPath = parse(TokenPath, {"instrument_token": raw})
    return path.instrument_token


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
    """Subscribe an instrument for a requester.

    202 when a task was queued for the socket; 200 when the socket already carries
    what the token's requesters need (the request is recorded all the same).
    """
    problem = body.problem()
    if problem is not None:
        raise ApiError(422, "invalid_field", f"{problem[0]}: {problem[1]}", field=problem[0])
    try:
        instrument = _service().resolve(body.instrument_token, body.exchange,
                                        body.tradingsymbol)
    except UnknownInstrument as exc:
        field = "instrument_token" if body.instrument_token is not None else "tradingsymbol"
        raise ApiError(404, "unknown_instrument", str(exc), field=field) from None
    outcome = _service().subscribe(instrument.instrument_token, body.requested_mode,
                                   body.client_id)
    return _answer(outcome)


@api.post("/subscriptions/batch")
@documented({200: answers.BatchAnswer, 202: answers.BatchAnswer},
            body=BatchSubscribeRequest, writes=True, tags=("subscriptions",))
def create_subscriptions(body: BatchSubscribeRequest):  # type: ignore[no-untyped-def]
    """Subscribe many instruments for one requester; the answer goes item by item.

    Each account the batch lands on gets one task, sent to Kite as lists. 202 when
    any item was queued, 200 when none needed the socket.
    """
    answer, status = subscribe_batch(_service(), body, _with_requesters)
    return jsonify(answer), status


@api.route("/subscriptions/batch", methods=["GET", "PATCH", "DELETE"])
def batch_other_methods():  # type: ignore[no-untyped-def]
    # Without this, these fall through to /subscriptions/<raw_token> and are
    # answered as a bad token, which misleads more than it helps.
    raise MethodNotAllowed(valid_methods=["POST"])


@api.patch("/subscriptions/<raw_token>")
@documented({200: answers.Subscription, 202: answers.Subscription}, body=ModeChange,
            errors=(404, 422), writes=True, tags=("subscriptions",))
def change_mode(raw_token: str, body: ModeChange):  # type: ignore[no-untyped-def]
    """Change the mode a requester holds a subscription in."""
    outcome = _service().subscribe(_token(raw_token), body.requested_mode, body.client_id,
                                   must_hold=True)
    return _answer(outcome)


@api.delete("/subscriptions/<raw_token>")
@documented({200: answers.Subscription, 202: answers.Subscription}, query=RequesterQuery,
            errors=(404,), writes=True, tags=("subscriptions",))
def delete_subscription(raw_token: str, query: RequesterQuery):  # type: ignore[no-untyped-def]
    """A requester leaves; the last one out takes the token off the socket (202)."""
    return _answer(_service().unsubscribe(_token(raw_token), query.client_id))


@api.get("/subscriptions/<raw_token>")
@documented({200: answers.Subscription}, errors=(404, 422), tags=("subscriptions",))
def get_subscription(raw_token: str):  # type: ignore[no-untyped-def]
    return jsonify(_with_requesters([_service().get(_token(raw_token))])[0])


def _answer(outcome: ChangeOutcome):  # type: ignore[no-untyped-def]
    [body] = _with_requesters([outcome.subscription])
    return jsonify(body), 202 if outcome.accepted else 200


def _with_requesters(subscriptions: list[Subscription]) -> list[dict[str, Any]]:
    held = _service().requesters([s.instrument_token for s in subscriptions])
    return [
        {**s.to_json(), "requesters": [
            {"client_id": client_id, "requested_mode": mode.label}
            for client_id, mode in held.get(s.instrument_token, [])
        ]}
        for s in subscriptions
    ]


@api.get("/subscriptions")
@documented({200: answers.SubscriptionList}, query=ListQuery, tags=("subscriptions",))
def list_subscriptions(query: ListQuery):  # type: ignore[no-untyped-def]
    """Pending, active and removing subscriptions, or those of one status."""
    items = _service().list(query.account, query.status)
    return jsonify({"subscriptions": _with_requesters(items), "count": len(items)})


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

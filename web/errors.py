"""Every error the API gives, as one JSON shape: code, message, field, request id."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import redis
from flask import Flask, g, jsonify, request
from psycopg_pool import PoolTimeout
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from ticker.errors import (
    CapacityExhausted,
    InstrumentsUnavailable,
    NoLiveWorker,
    RequesterNotFound,
    SubscriptionNotFound,
    UnknownAccount,
    UnknownInstrument,
)
from ticker.service import DispatchFailed

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details


def from_validation(exc: ValidationError, prefix: str = "") -> ApiError:
    """A 422 naming the first field at fault, with every problem in `details`."""
    details = []
    for err in exc.errors():
        field = prefix + ".".join(str(p) for p in err["loc"]) if err["loc"] else None
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "is not a field this endpoint takes"
        details.append({"field": field, "reason": reason})
    first = details[0]
    return ApiError(
        422,
        "invalid_field",
        f"{first['field']}: {first['reason']}" if first["field"] else first["reason"],
        field=first["field"],
        details=details,
    )


# Core errors a caller can act on, and the HTTP answer each one gets.
_DOMAIN_ERRORS: list[tuple[type[Exception], int, str, str | None]] = [
    (UnknownInstrument, 404, "unknown_instrument", "instrument_token"),
    # Before its base: the token is live, the requester is the one at fault.
    (RequesterNotFound, 404, "subscription_not_found", "client_id"),
    (SubscriptionNotFound, 404, "subscription_not_found", "instrument_token"),
    (UnknownAccount, 422, "unknown_account", "account"),
    (CapacityExhausted, 503, "capacity_exhausted", None),
    (NoLiveWorker, 503, "no_live_worker", None),
    (InstrumentsUnavailable, 503, "instruments_unavailable", None),
    (DispatchFailed, 503, "broker_unavailable", None),
]


def describe(exc: Exception) -> tuple[int, str, str | None] | None:
    """The status, code and field a core error answers with; None for any other."""
    for kind, status, code, field in _DOMAIN_ERRORS:
        if isinstance(exc, kind):
            return status, code, field
    return None


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):  # type: ignore[no-untyped-def]
        return _answer(exc)

    for kind, status, code, field in _DOMAIN_ERRORS:
        app.register_error_handler(
            kind, lambda exc, s=status, c=code, f=field: _answer(ApiError(s, c, str(exc), f))
        )

    @app.errorhandler(PoolTimeout)
    @app.errorhandler(psycopg.OperationalError)
    def _database_down(exc: Exception):  # type: ignore[no-untyped-def]
        log.warning("database unavailable: %s", exc)
        return _answer(ApiError(503, "database_unavailable",
                                "PostgreSQL is not answering; retry shortly"))

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: Exception):  # type: ignore[no-untyped-def]
        log.warning("redis unavailable: %s", exc)
        return _answer(ApiError(503, "redis_unavailable", "Redis is not answering; retry shortly"))

    @app.errorhandler(MethodNotAllowed)
    def _method(exc: MethodNotAllowed):  # type: ignore[no-untyped-def]
        allowed = sorted(exc.valid_methods or [])
        response, status = _answer(ApiError(
            405, "method_not_allowed",
            f"{request.method} is not allowed here; use {', '.join(allowed)}",
        ))
        response.headers["Allow"] = ", ".join(allowed)
        return response, status

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):  # type: ignore[no-untyped-def]
        # One wording whether the length was announced up front or the body ran over.
        limit = app.config["MAX_CONTENT_LENGTH"]
        return _answer(ApiError(413, "request_entity_too_large",
                                f"the body must be under {limit} bytes"))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = (exc.name or "error").lower().replace(" ", "_")
        return _answer(ApiError(exc.code or 500, code, exc.description or exc.name))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error request_id=%s", g.get("request_id"))
        return _answer(ApiError(500, "internal_error",
                                "unexpected error; the request id is in the server log"))


def _answer(exc: ApiError):  # type: ignore[no-untyped-def]
    body: dict[str, Any] = {
        "code": exc.code,
        "message": exc.message,
        "request_id": g.get("request_id"),
    }
    if exc.field is not None:
        body["field"] = exc.field
    if exc.details:
        body["details"] = exc.details
    return jsonify({"error": body}), exc.status

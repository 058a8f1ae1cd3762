"""The HTTP API of the ticker service."""

from __future__ import annotations

import hmac
import logging
import re
import uuid
from typing import Any

import redis
from flask import Flask, g, request
from prometheus_client import CollectorRegistry

from tasks.app import app as celery_app
from tasks.sender import CeleryTaskSender
from ticker.access_tokens import access_token_or_file
from ticker.accounts import load_accounts
from ticker.config import Settings
from ticker.instruments import InstrumentUniverse, fetch_from_kite
from ticker.metrics import ServiceCollector
from ticker.service import SubscriptionService
from ticker.storage.pool import make_pool
from web.api import api
from web.contract import spec
from web.errors import ApiError, register_error_handlers
from web.status import status

__all__ = ["create_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
API_KEY_HEADER = "X-API-Key"
# Reads stay open; every method that changes something needs the key, when one is set.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def create_app(settings: Settings | None = None, service: Any = None) -> Flask:
    """Build the API; `service` replaces the wired one (tests of the HTTP layer)."""
    settings = settings or Settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["ticker.service"] = service or _wire(settings)
    # A registry of the app's own: the series describe the service, not the process.
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(ServiceCollector(app.extensions["ticker.service"].metrics_snapshot))
    app.extensions["ticker.metrics"] = metrics

    @app.before_request
    def _request_id() -> None:
        # A caller's own id is kept when it is a plain token; anything else is
        # replaced rather than echoed into headers and logs.
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.before_request
    def _require_api_key() -> None:
        if settings.api_key is None or request.method in READ_METHODS:
            return
        given = request.headers.get(API_KEY_HEADER, "").encode()
        # Constant time, so the answer's timing says nothing about the key.
        if not hmac.compare_digest(given, settings.api_key.get_secret_value().encode()):
            raise ApiError(401, "unauthorized",
                           f"send the service's API key in the {API_KEY_HEADER} header",
                           field=API_KEY_HEADER)

    @app.after_request
    def _echo_request_id(response):  # type: ignore[no-untyped-def]
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response

    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(status)
    spec.register(app)
    return app


def _wire(settings: Settings) -> SubscriptionService:
    accounts = load_accounts(settings.accounts_file)
    first = next(iter(accounts))
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                                  socket_connect_timeout=2)
    universe = InstrumentUniverse(
        # A token rotated with `ticker token set` wins over the accounts file's.
        lambda: fetch_from_kite(first, settings.kite_rest_root,
                                access_token_or_file(client, settings.key_prefix, first)),
        settings.instruments_ttl_s,
    )
    return SubscriptionService(
        accounts=accounts,
        pool=make_pool(settings.database_url, "web"),
        client=client,
        universe=universe,
        sender=CeleryTaskSender(celery_app, settings),
        key_prefix=settings.key_prefix,
        queue_of=settings.account_queue,
        broker=(
            redis.Redis.from_url(settings.celery_broker_url, socket_timeout=2,
                                 socket_connect_timeout=2)
            if settings.celery_broker_url.startswith(("redis://", "rediss://"))
            else None
        ),
        events_stream=settings.events_stream,
        backfill_queue=settings.backfill_queue,
    )

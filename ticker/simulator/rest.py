"""Kite's REST routes the service uses: the instruments dump and historical candles.

Answers keep Kite's shapes, status codes and error envelopes, so the official
client raises the same exception types it would against api.kite.trade.
Requests are checked the way Kite checks them, with an
`Authorization: token <api_key>:<access_token>` header.

Middlewares run in the order listed in `create_rest_app`; Kite's per-route rate
limits (historical 3/s, others 10/s) belong in one placed after authentication,
so a limited request is always an authenticated one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web

from ticker.simulator import history
from ticker.simulator.chain import IST
from ticker.simulator.credentials import Credentials
from ticker.simulator.universe import Universe

logger = logging.getLogger(__name__)

DEBUG_PREFIX = "/_sim/"
CSV_CONTENT_TYPE = "text/csv"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def kite_error(status: int, error_type: str, message: str) -> web.Response:
    """Kite's error envelope; the client raises the exception named by error_type."""
    return web.json_response(
        {"status": "error", "message": message, "data": None, "error_type": error_type},
        status=status,
    )


def kite_success(data: object) -> web.Response:
    return web.json_response({"status": "success", "data": data})


class KiteRest:
    """Handlers and middlewares of the Kite part of the REST port."""

    def __init__(self, universe: Universe, credentials: Credentials) -> None:
        self._universe = universe
        self._credentials = credentials

    def register(self, app: web.Application) -> None:
        app.router.add_get("/instruments", self.instruments)
        app.router.add_get("/instruments/{exchange}", self.instruments)
        app.router.add_get(
            "/instruments/historical/{instrument_token}/{interval}", self.historical
        )

    @web.middleware
    async def errors(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        """Turn aiohttp's plain HTTP errors into Kite's JSON envelope."""
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return kite_error(404, "GeneralException", "Route not found")
        except web.HTTPMethodNotAllowed:
            return kite_error(405, "GeneralException", "Method not allowed")

    @web.middleware
    async def authenticate(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        if request.path.startswith(DEBUG_PREFIX):
            return await handler(request)
        api_key, access_token = _token_header(request.headers.get("Authorization", ""))
        if self._credentials.check(api_key, access_token) is None:
            logger.info(
                "rest refused path=%s api_key=%s status=403", request.path, api_key
            )
            return kite_error(
                403, "TokenException", "Incorrect `api_key` or `access_token`."
            )
        return await handler(request)

    async def instruments(self, request: web.Request) -> web.StreamResponse:
        body = self._universe.csv(request.match_info.get("exchange"))
        response = web.Response(body=body, content_type=CSV_CONTENT_TYPE)
        # Kite serves the dump gzipped; clients that accept gzip get it so here too.
        response.enable_compression()
        return response

    async def historical(self, request: web.Request) -> web.StreamResponse:
        try:
            token = int(request.match_info["instrument_token"])
        except ValueError:
            token = -1
        instrument = self._universe.get(token)
        if instrument is None:
            return kite_error(400, "InputException", "invalid token")

        interval = request.match_info["interval"]
        query = request.query
        try:
            start = history.parse_timestamp(query.get("from"), "from")
            end = history.parse_timestamp(query.get("to"), "to")
            continuous = _flag(query.get("continuous"), "continuous")
            with_oi = _flag(query.get("oi"), "oi")
            history.check_request(interval, start, end, continuous)
        except history.InvalidHistoryRequest as exc:
            return kite_error(400, "InputException", str(exc))

        now = datetime.now(IST).replace(tzinfo=None)
        # A long day-candle request builds a few hundred thousand minute bars;
        # do it off the event loop so ticks keep flowing meanwhile.
        candles = await asyncio.to_thread(
            history.candles, instrument, interval, start, end, with_oi, now
        )
        logger.debug(
            "rest historical token=%d interval=%s candles=%d",
            token,
            interval,
            len(candles),
        )
        return kite_success({"candles": candles})


def _token_header(value: str) -> tuple[str | None, str | None]:
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "token" or ":" not in credentials:
        return None, None
    api_key, _, access_token = credentials.strip().partition(":")
    return api_key, access_token


def _flag(value: str | None, name: str) -> bool:
    if value in (None, "", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise history.InvalidHistoryRequest(f"invalid {name} {value!r}: use 0 or 1")

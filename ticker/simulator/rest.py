"""Kite's REST routes the service uses: the instruments dump and historical candles.

Answers keep Kite's shapes, status codes and error envelopes, so the official
client raises the same exception types it would against api.kite.trade.
Requests are checked the way Kite checks them, with an
`Authorization: token <api_key>:<access_token>` header.

Middlewares run in the order `Simulator` lists them: `record` outermost, so the
historical log holds every answer, 403 and 429 included; then `errors`,
`authenticate`, `inject_faults` (failures a test asked for) and `throttle` last, so
only an authenticated request uses up its api_key's allowance. A request later
refused with 400 has still used its turn.
Only the historical route is limited (Kite: 3 requests a second per api_key); the
rest of Kite's limits (10/s) are not simulated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime

from aiohttp import web

from ticker.simulator import history
from ticker.simulator.chain import IST
from ticker.simulator.credentials import Credential, Credentials
from ticker.simulator.historical_faults import ERROR_TYPES, HistoricalFaults
from ticker.simulator.historical_log import HistoricalLog, HistoricalRequest
from ticker.simulator.ratelimit import HISTORICAL_PER_S, SlidingWindowLimit
from ticker.simulator.universe import Universe

logger = logging.getLogger(__name__)

DEBUG_PREFIX = "/_sim/"
CSV_CONTENT_TYPE = "text/csv"
HISTORICAL_ROUTE = "historical"
# What this module stores on a request for the middlewares further out.
_CREDENTIAL = web.RequestKey("kite_credential", Credential)
_CANDLES = web.RequestKey("kite_candles", int)

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

    def __init__(
        self,
        universe: Universe,
        credentials: Credentials,
        *,
        historical_per_s: float = HISTORICAL_PER_S,
        historical_log: HistoricalLog | None = None,
        reference_session: date | None = None,
        faults: HistoricalFaults | None = None,
    ) -> None:
        """`historical_per_s` is per api_key; `math.inf` turns the limit off.

        `reference_session` is the session whose candles sit at the instruments'
        last prices, where the streamed ticks start (see `history`); by default
        the latest one opened by now.
        """
        self._universe = universe
        self._credentials = credentials
        self._historical_limit = SlidingWindowLimit.per_second(historical_per_s)
        # Not `or`: an empty log is falsy, and the debug API must see this one.
        self.historical_log = (
            HistoricalLog() if historical_log is None else historical_log
        )
        self._reference_session = reference_session or history.latest_session(
            _ist_now()
        )
        self._faults = faults or HistoricalFaults()

    def register(self, app: web.Application) -> None:
        app.router.add_get("/user/profile", self.profile)
        app.router.add_get("/instruments", self.instruments)
        app.router.add_get("/instruments/{exchange}", self.instruments)
        app.router.add_get(
            "/instruments/historical/{instrument_token}/{interval}",
            self.historical,
            name=HISTORICAL_ROUTE,
        )

    async def profile(self, request: web.Request) -> web.Response:
        """The user behind a token, in Kite's shape: what a token check asks for."""
        credential: Credential = request[_CREDENTIAL]
        return kite_success({
            "user_id": credential.account_id.upper(),
            "user_type": "individual",
            "user_name": f"Simulated {credential.account_id}",
            "user_shortname": credential.account_id,
            "email": f"{credential.account_id}@simulator.invalid",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "NFO", "BSE", "BFO", "CDS", "MCX"],
            "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "avatar_url": None,
            "meta": {"demat_consent": "physical"},
        })

    @web.middleware
    async def record(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        """Log each historical request with the status it was answered with."""
        if request.match_info.route.name != HISTORICAL_ROUTE:
            return await handler(request)
        at = time.time()
        # An exception that escapes every middleware becomes aiohttp's plain 500.
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.historical_log.add(_historical_request(request, at, status))

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
        credential = self._credentials.check(api_key, access_token)
        if credential is None:
            logger.info(
                "rest refused path=%s api_key=%s status=403", request.path, api_key
            )
            return kite_error(
                403, "TokenException", "Incorrect `api_key` or `access_token`."
            )
        request[_CREDENTIAL] = credential
        return await handler(request)

    @web.middleware
    async def inject_faults(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        """Fail a historical request as Kite would, when a test asked for it."""
        credential = request.get(_CREDENTIAL)
        if credential is None or request.match_info.route.name != HISTORICAL_ROUTE:
            return await handler(request)
        status = self._faults.take(credential.api_key)
        if status is None:
            return await handler(request)
        logger.info("rest failed on request path=%s api_key=%s status=%d",
                    request.path, credential.api_key, status)
        return kite_error(status, ERROR_TYPES[status], f"Simulated failure ({status})")

    @web.middleware
    async def throttle(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        """Answer 429 past Kite's historical rate, per api_key, as Kite does."""
        credential = request.get(_CREDENTIAL)
        if (
            self._historical_limit is None
            or credential is None
            or request.match_info.route.name != HISTORICAL_ROUTE
        ):
            return await handler(request)
        if not self._historical_limit.allow(credential.api_key):
            logger.info(
                "rest refused path=%s api_key=%s status=429",
                request.path,
                credential.api_key,
            )
            return kite_error(429, "NetworkException", "Too many requests")
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

        # A long day-candle request builds a few hundred thousand minute bars;
        # do it off the event loop so ticks keep flowing meanwhile.
        candles = await asyncio.to_thread(
            history.candles,
            instrument,
            interval,
            start,
            end,
            with_oi,
            _ist_now(),
            self._reference_session,
        )
        request[_CANDLES] = len(candles)
        logger.debug(
            "rest historical token=%d interval=%s candles=%d",
            token,
            interval,
            len(candles),
        )
        return kite_success({"candles": candles})


def _ist_now() -> datetime:
    """Now as a naive IST wall time, the form `history` works in."""
    return datetime.now(IST).replace(tzinfo=None)


def _historical_request(
    request: web.Request, at: float, status: int
) -> HistoricalRequest:
    api_key, _ = _token_header(request.headers.get("Authorization", ""))
    token_text = request.match_info["instrument_token"]
    try:
        token: int | str = int(token_text)
    except ValueError:
        token = token_text
    return HistoricalRequest(
        at=at,
        api_key=api_key,
        instrument_token=token,
        interval=request.match_info["interval"],
        from_=request.query.get("from"),
        to=request.query.get("to"),
        oi=request.query.get("oi") in ("1", "true"),
        status=status,
        candles=request.get(_CANDLES, 0) if status == 200 else 0,
    )


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

"""Switches that make the simulator fail the way Kite does, for tests to pull.

Simulator only: none of these routes exists on Kite, and no service code may call
them. They sit under /_sim/ on the REST port, beside the read-only views of
`debug`, and let a test cause for real the faults a worker must survive: a socket
cut without a close frame, a clean close from the server, a socket that stays
open but goes mute, an access token that stops working.

    POST /_sim/connections/{id}/drop        {"code": 1006 | 1000}, default 1006
    POST /_sim/connections/{id}/silence     send nothing from now on
    POST /_sim/connections/{id}/resume      send again
    POST /_sim/connections/{id}/limit       {"instruments": n}: refuse past n, with
                                            Kite's error text frame
    POST /_sim/accounts/{api_key}/drop      the same for each live connection
    POST /_sim/accounts/{api_key}/silence   each current connection; new ones not
    POST /_sim/accounts/{api_key}/resume
    POST /_sim/accounts/{api_key}/revoke    refuse the current token, cut sockets
    POST /_sim/accounts/{api_key}/token     {"access_token": "..."} install one
    POST /_sim/accounts/{api_key}/historical-errors
                                            {"status": 503, "count": 2}: fail the
                                            next historical requests with that status

A connection route answers with the connection's snapshot, an account route with
the ids it acted on (revoke and token: the account's summary). A drop answers
once the connection is gone, so its snapshot says how it ended.

Code 1006 is never sent on the wire: it is what a client reports when the TCP
connection ends without a close handshake, so asking for it aborts the
connection. Any other code is sent in a close frame the server begins.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ticker.simulator.connections import Connection, ConnectionRegistry
from ticker.simulator.credentials import Credentials, TokenRetired
from ticker.simulator.debug import account_summary
from ticker.simulator.historical_faults import HistoricalFaults
from ticker.simulator.rest import DEBUG_PREFIX

logger = logging.getLogger(__name__)

ABORT_CODE = 1006
DEFAULT_DROP_CODE = ABORT_CODE
# Codes RFC 6455 (section 7.4.1) lets a server send; 1010 is the client's alone.
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011})
_APPLICATION_CODES = frozenset(range(3000, 5000))
# How long a drop waits for the connection's handler to finish before answering.
DROP_WAIT_S = 5.0
DROP_MESSAGE = b"dropped by the simulator"

_Handler = Callable[[web.Request], Awaitable[web.Response]]


class _Refused(Exception):
    """A switch request that cannot be acted on, and the status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FaultSwitches:
    """The POST routes that drop, silence and de-authorise connections."""

    def __init__(self, registry: ConnectionRegistry, credentials: Credentials,
                 historical_faults: HistoricalFaults) -> None:
        self._registry = registry
        self._credentials = credentials
        self._historical_faults = historical_faults

    def register(self, app: web.Application) -> None:
        connection = DEBUG_PREFIX + "connections/{id}/"
        account = DEBUG_PREFIX + "accounts/{api_key}/"
        routes: dict[str, _Handler] = {
            connection + "drop": self.drop_connection,
            connection + "silence": self.silence_connection,
            connection + "resume": self.resume_connection,
            connection + "limit": self.limit_connection,
            account + "drop": self.drop_account,
            account + "silence": self.silence_account,
            account + "resume": self.resume_account,
            account + "revoke": self.revoke,
            account + "token": self.install_token,
            account + "historical-errors": self.fail_historical,
        }
        for path, handler in routes.items():
            app.router.add_post(path, _answering_refusals(handler))

    async def drop_connection(self, request: web.Request) -> web.Response:
        connection = self._connection(request)
        code = _drop_code(await _body(request))
        logger.info("sim switch drop id=%d code=%d", connection.id, code)
        await _drop(connection, code, "drop")
        return web.json_response(connection.snapshot())

    async def silence_connection(self, request: web.Request) -> web.Response:
        connection = self._connection(request)
        connection.silence()
        logger.info("sim switch silence id=%d", connection.id)
        return web.json_response(connection.snapshot())

    async def resume_connection(self, request: web.Request) -> web.Response:
        connection = self._connection(request)
        connection.resume()
        logger.info("sim switch resume id=%d", connection.id)
        return web.json_response(connection.snapshot())

    async def limit_connection(self, request: web.Request) -> web.Response:
        """Change a live connection's instrument limit; subscribed tokens stay."""
        connection = self._connection(request)
        limit = (await _body(request)).get("instruments")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise _Refused(400, 'expected a JSON body {"instruments": n}, n >= 0')
        connection.subscriptions.limit = limit
        logger.info("sim switch limit id=%d instruments=%d", connection.id, limit)
        return web.json_response(connection.snapshot())

    async def drop_account(self, request: web.Request) -> web.Response:
        api_key = self._api_key(request)
        code = _drop_code(await _body(request))
        connections = self._registry.of(api_key)
        logger.info(
            "sim switch drop api_key=%s code=%d connections=%d",
            api_key,
            code,
            len(connections),
        )
        await asyncio.gather(*(_drop(c, code, "drop") for c in connections))
        return web.json_response([c.id for c in connections])

    async def silence_account(self, request: web.Request) -> web.Response:
        api_key = self._api_key(request)
        connections = self._registry.of(api_key)
        for connection in connections:
            connection.silence()
        logger.info(
            "sim switch silence api_key=%s connections=%d", api_key, len(connections)
        )
        return web.json_response([c.id for c in connections])

    async def resume_account(self, request: web.Request) -> web.Response:
        api_key = self._api_key(request)
        connections = self._registry.of(api_key)
        for connection in connections:
            connection.resume()
        logger.info(
            "sim switch resume api_key=%s connections=%d", api_key, len(connections)
        )
        return web.json_response([c.id for c in connections])

    async def revoke(self, request: web.Request) -> web.Response:
        """Expire the api_key's token as Kite does daily, cutting its sockets."""
        api_key = request.match_info["api_key"]
        credential = self._credentials.revoke(api_key)
        if credential is None:
            raise _unknown_account(api_key)
        # Refuse first, then cut: a client reconnecting at once is refused too.
        connections = self._registry.of(api_key)
        await asyncio.gather(*(_drop(c, ABORT_CODE, "revoked") for c in connections))
        logger.info(
            "sim switch revoke api_key=%s dropped=%d", api_key, len(connections)
        )
        summary = account_summary(credential, self._credentials, self._registry)
        return web.json_response({**summary, "dropped": [c.id for c in connections]})

    async def install_token(self, request: web.Request) -> web.Response:
        api_key = request.match_info["api_key"]
        token = (await _body(request)).get("access_token")
        if not isinstance(token, str) or not token:
            raise _Refused(400, 'expected a JSON body {"access_token": "..."}')
        try:
            credential = self._credentials.install_token(api_key, token)
        except TokenRetired as exc:
            raise _Refused(409, str(exc)) from exc
        if credential is None:
            raise _unknown_account(api_key)
        return web.json_response(
            account_summary(credential, self._credentials, self._registry)
        )

    async def fail_historical(self, request: web.Request) -> web.Response:
        """Fail the api_key's next historical requests: {"status": 503, "count": 2}."""
        api_key = self._api_key(request)
        body = await _body(request)
        status, count = body.get("status", 503), body.get("count", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (status, count)):
            raise _Refused(400, 'expected a JSON body {"status": 503, "count": 2}')
        try:
            queued = self._historical_faults.fail_next(api_key, status, count)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from exc
        logger.info("sim switch historical-errors api_key=%s status=%d count=%d",
                    api_key, status, count)
        return web.json_response({"api_key": api_key, "queued": queued})

    def _connection(self, request: web.Request) -> Connection:
        text = request.match_info["id"]
        found = self._registry.get(int(text)) if text.isdigit() else None
        if found is None:
            raise _Refused(404, f"no live connection {text!r}")
        return found

    def _api_key(self, request: web.Request) -> str:
        api_key = request.match_info["api_key"]
        if self._credentials.get(api_key) is None:
            raise _unknown_account(api_key)
        return api_key


def _answering_refusals(handler: _Handler) -> _Handler:
    """Wrap a handler so a refusal becomes a JSON error with its status.

    A plain aiohttp 404 would not do: the Kite middleware rewrites those into
    Kite's "Route not found", hiding which id or api_key was unknown.
    """

    async def answer(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except _Refused as refused:
            return web.json_response({"error": str(refused)}, status=refused.status)

    return answer


async def _drop(connection: Connection, code: int, reason: str) -> None:
    """End a connection with `code` and wait, within reason, until it is gone."""
    if code == ABORT_CODE:
        connection.abort(reason)
    else:
        await connection.close(code, DROP_MESSAGE, reason)
    if not await connection.wait_closed(DROP_WAIT_S):
        logger.warning(
            "sim switch drop unfinished id=%d code=%d wait_s=%s",
            connection.id,
            code,
            DROP_WAIT_S,
        )


def _drop_code(body: dict[str, Any]) -> int:
    code = body.get("code", DEFAULT_DROP_CODE)
    # bool is an int too, and `true` is no close code.
    if not isinstance(code, int) or isinstance(code, bool):
        raise _Refused(400, f"close code {code!r} is not an integer")
    if code != ABORT_CODE and code not in _SENDABLE_CODES | _APPLICATION_CODES:
        raise _Refused(
            400, f"close code {code} cannot be sent; use 1006 to abort, or 1000"
        )
    return code


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body counts as `{}`."""
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise _Refused(400, f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _Refused(400, f"body must be a JSON object, not {type(body).__name__}")
    return body


def _unknown_account(api_key: str) -> _Refused:
    return _Refused(404, f"no account with api_key {api_key!r}")

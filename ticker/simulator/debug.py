"""The simulator's own inspection API under /_sim/ on the REST port.

Not part of Kite: nothing here exists on api.kite.trade, and no service code may
depend on it. Tests and benchmarks use it to see what clients really did (what
they subscribed, which text frames they sent, how many ticks went out, which
historical requests they made and how each was answered, how each connection
ended, which accounts' tokens are still good). Access tokens are only ever shown
masked. The POST switches that cause faults live in `switches`.

    GET    /_sim/connections[?api_key=]   live connections, full snapshots
    GET    /_sim/connections/{id}         one live connection, or 404
    GET    /_sim/closed[?api_key=]        latest closed connections, oldest first
    GET    /_sim/accounts                 each api_key: token state, live count
    GET    /_sim/stats                    simulator-wide counters
    GET    /_sim/historical               historical requests and their answers
    DELETE /_sim/historical               forget them
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ticker.simulator.connections import ConnectionRegistry
from ticker.simulator.credentials import Credential, Credentials, mask_token
from ticker.simulator.historical_log import HistoricalLog
from ticker.simulator.rest import DEBUG_PREFIX


class DebugApi:
    """Views of the simulator's connections, historical requests and counters."""

    def __init__(
        self,
        registry: ConnectionRegistry,
        info: dict[str, Any],
        historical_log: HistoricalLog | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self._registry = registry
        self._info = info
        self._credentials = credentials
        self._historical_log = (
            HistoricalLog() if historical_log is None else historical_log
        )

    def register(self, app: web.Application) -> None:
        app.router.add_get(DEBUG_PREFIX + "connections", self.connections)
        app.router.add_get(DEBUG_PREFIX + "connections/{id}", self.connection)
        app.router.add_get(DEBUG_PREFIX + "closed", self.closed)
        app.router.add_get(DEBUG_PREFIX + "accounts", self.accounts)
        app.router.add_get(DEBUG_PREFIX + "stats", self.stats)
        app.router.add_get(DEBUG_PREFIX + "historical", self.historical)
        app.router.add_delete(DEBUG_PREFIX + "historical", self.clear_historical)

    async def connections(self, request: web.Request) -> web.Response:
        """Every live ticker connection; `?api_key=` narrows to one account."""
        api_key = request.query.get("api_key")
        return web.json_response(
            [
                c.snapshot()
                for c in self._registry
                if api_key is None or c.api_key == api_key
            ]
        )

    async def connection(self, request: web.Request) -> web.Response:
        try:
            found = self._registry.get(int(request.match_info["id"]))
        except ValueError:
            found = None
        if found is None:
            return web.json_response(
                {"error": f"no live connection {request.match_info['id']!r}"},
                status=404,
            )
        return web.json_response(found.snapshot())

    async def closed(self, request: web.Request) -> web.Response:
        """How the latest connections ended; `?api_key=` narrows to one account."""
        api_key = request.query.get("api_key")
        return web.json_response(
            [
                c
                for c in self._registry.closed()
                if api_key is None or c["api_key"] == api_key
            ]
        )

    async def accounts(self, request: web.Request) -> web.Response:
        """Each configured api_key, whether its token is good, its live sockets."""
        credentials = self._credentials
        if credentials is None:
            return web.json_response([])
        return web.json_response(
            [account_summary(c, credentials, self._registry) for c in credentials]
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {**self._info, **self._registry.stats(), **self._historical_log.stats()}
        )

    async def historical(self, request: web.Request) -> web.Response:
        """Historical requests in arrival order, since start or the last DELETE."""
        return web.json_response(self._historical_log.snapshot())

    async def clear_historical(self, request: web.Request) -> web.Response:
        """Forget the historical requests and their counts, so a test starts clean."""
        self._historical_log.clear()
        return web.Response(status=204)


def account_summary(
    credential: Credential,
    credentials: Credentials,
    registry: ConnectionRegistry,
) -> dict[str, Any]:
    """One account as the debug API shows it, its access token masked."""
    api_key = credential.api_key
    return {
        "api_key": api_key,
        "account_id": credential.account_id,
        "state": "revoked" if credentials.is_revoked(api_key) else "valid",
        "access_token": mask_token(credential.access_token),
        "retired_tokens": credentials.retired_count(api_key),
        "live_connections": registry.count(api_key),
        "max_connections": credential.max_connections,
    }

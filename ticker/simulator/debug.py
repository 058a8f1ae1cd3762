"""The simulator's own inspection API under /_sim/ on the REST port.

Not part of Kite: nothing here exists on api.kite.trade, and no service code may
depend on it. Tests and benchmarks use it to see what clients really did (what
they subscribed, which text frames they sent, how many ticks went out, which
historical requests they made and how each was answered). Switches
that act on connections (drop one, make it go silent) belong here as POST routes
that look the connection up in the registry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ticker.simulator.connections import ConnectionRegistry
from ticker.simulator.historical_log import HistoricalLog
from ticker.simulator.rest import DEBUG_PREFIX


class DebugApi:
    """Views of the simulator's connections, historical requests and counters."""

    def __init__(
        self,
        registry: ConnectionRegistry,
        info: dict[str, Any],
        historical_log: HistoricalLog | None = None,
    ) -> None:
        self._registry = registry
        self._info = info
        self._historical_log = (
            HistoricalLog() if historical_log is None else historical_log
        )

    def register(self, app: web.Application) -> None:
        app.router.add_get(DEBUG_PREFIX + "connections", self.connections)
        app.router.add_get(DEBUG_PREFIX + "connections/{id}", self.connection)
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

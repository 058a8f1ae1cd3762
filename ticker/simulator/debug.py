"""The simulator's own inspection API under /_sim/ on the REST port.

Not part of Kite: nothing here exists on api.kite.trade, and no service code may
depend on it. Tests and benchmarks use it to see what clients really did (what
they subscribed, which text frames they sent, how many ticks went out). Switches
that act on connections (drop one, make it go silent) belong here as POST routes
that look the connection up in the registry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ticker.simulator.connections import ConnectionRegistry
from ticker.simulator.rest import DEBUG_PREFIX


class DebugApi:
    """Read-only views of the simulator's connections and counters."""

    def __init__(self, registry: ConnectionRegistry, info: dict[str, Any]) -> None:
        self._registry = registry
        self._info = info

    def register(self, app: web.Application) -> None:
        app.router.add_get(DEBUG_PREFIX + "connections", self.connections)
        app.router.add_get(DEBUG_PREFIX + "connections/{id}", self.connection)
        app.router.add_get(DEBUG_PREFIX + "stats", self.stats)

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
        return web.json_response({**self._info, **self._registry.stats()})

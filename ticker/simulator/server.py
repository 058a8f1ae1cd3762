"""Wiring: the ticker and REST servers on one event loop, and `serve` for the CLI.

`Simulator` is the in-process handle: build it from `Settings`, `await start()`,
read the bound ports (port 0 picks a free one), `await stop()`. `serve` is what
`ticker sim` runs: it blocks until SIGINT or SIGTERM and then closes every
ticker connection with code 1000 before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket

from aiohttp import web

from ticker.config import Settings
from ticker.simulator.chain import nifty_universe
from ticker.simulator.clock import TickClock
from ticker.simulator.connections import ConnectionRegistry
from ticker.simulator.credentials import Credentials
from ticker.simulator.debug import DebugApi
from ticker.simulator.historical_faults import HistoricalFaults
from ticker.simulator.historical_log import HistoricalLog
from ticker.simulator.market import Market
from ticker.simulator.ratelimit import HISTORICAL_PER_S, SlidingWindowLimit
from ticker.simulator.rest import KiteRest
from ticker.simulator.switches import FaultSwitches
from ticker.simulator.universe import Universe, load_universe
from ticker.simulator.ws import TickerEndpoint

logger = logging.getLogger(__name__)

# How long shutdown waits for clients to answer the close handshake.
CLOSE_TIMEOUT_S = 2.0
SHUTDOWN_MESSAGE = b"simulator shutting down"


class Simulator:
    """Kite's ticker WebSocket and REST API, simulated, in the running event loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        universe: Universe | None = None,
        credentials: Credentials | None = None,
        seed: int = 0,
        historical_per_s: float | None = None,
    ) -> None:
        """`historical_per_s` overrides the settings' historical rate per api_key.

        Kite's 3 a second is the default; `math.inf` lifts the limit.
        """
        self.settings = settings
        if universe is None:
            universe = (
                load_universe(settings.sim_instruments_file)
                if settings.sim_instruments_file
                else nifty_universe()
            )
        self.universe = universe
        self.credentials = credentials or Credentials.from_file(settings.accounts_file)
        self.registry = ConnectionRegistry()
        self.market = Market(universe, seed=seed)
        self.clock = TickClock(settings.sim_tick_interval_s)
        if historical_per_s is None:
            # Read defensively: the setting is newer than some Settings in use.
            historical_per_s = float(
                getattr(settings, "sim_historical_per_s", HISTORICAL_PER_S)
            )
        # Refuse a bad rate here, not halfway through start() with a port bound.
        SlidingWindowLimit.per_second(historical_per_s)
        self.historical_per_s = historical_per_s
        self.historical_log = HistoricalLog()
        self._runners: list[web.AppRunner] = []
        self.ws_port = 0
        self.rest_port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.sim_host}:{self.ws_port}/"

    @property
    def rest_url(self) -> str:
        return f"http://{self.settings.sim_host}:{self.rest_port}/"

    async def start(self) -> None:
        """Bind both ports and serve; a port of 0 in the settings picks a free one."""
        host = self.settings.sim_host
        try:
            self.ws_port = await self._serve_app(
                self._ticker_app(), host, self.settings.sim_ws_port
            )
            self.rest_port = await self._serve_app(
                self._rest_app(), host, self.settings.sim_rest_port
            )
        except OSError:
            # Release whichever port was already bound before reporting.
            await self.stop()
            raise
        logger.info(
            "simulator listening ws=%s rest=%s instruments=%d accounts=%d "
            "tick_interval_s=%s",
            self.ws_url,
            self.rest_url,
            len(self.universe),
            len(self.credentials),
            self.clock.interval_s,
        )

    async def stop(self) -> None:
        """Close every ticker connection with code 1000, then both servers."""
        connections = list(self.registry)
        closing = [c.close(1000, SHUTDOWN_MESSAGE, "shutdown") for c in connections]
        if closing:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(c) for c in closing], timeout=CLOSE_TIMEOUT_S
            )
            for task in pending:
                task.cancel()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        logger.info("simulator stopped connections_closed=%d", len(connections))

    def _ticker_app(self) -> web.Application:
        endpoint = TickerEndpoint(
            self.universe, self.market, self.clock, self.credentials, self.registry
        )
        app = web.Application()
        # Kite's ticker lives at the root; any path is accepted the same way.
        app.router.add_get("/{path:.*}", endpoint.handle)
        return app

    def _rest_app(self) -> web.Application:
        faults = HistoricalFaults()
        kite = KiteRest(
            self.universe,
            self.credentials,
            historical_per_s=self.historical_per_s,
            historical_log=self.historical_log,
            faults=faults,
        )
        debug = DebugApi(
            self.registry,
            {
                "instruments": len(self.universe),
                "tick_interval_s": self.clock.interval_s,
                # JSON has no infinity: an unlimited rate shows as null.
                "historical_per_s": (
                    None if math.isinf(self.historical_per_s) else self.historical_per_s
                ),
                "ws_url": self.ws_url,
            },
            self.historical_log,
            self.credentials,
        )
        switches = FaultSwitches(self.registry, self.credentials, faults)
        app = web.Application(
            middlewares=[
                kite.record, kite.errors, kite.authenticate, kite.inject_faults,
                kite.throttle,
            ]
        )
        kite.register(app)
        debug.register(app)
        switches.register(app)
        return app

    async def _serve_app(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        # Binding the socket here, not in aiohttp, tells us the port picked for 0.
        sock = socket.create_server((host, port))
        site = web.SockSite(runner, sock, shutdown_timeout=CLOSE_TIMEOUT_S)
        await site.start()
        bound: int = sock.getsockname()[1]
        return bound


def serve(settings: Settings) -> None:
    """Run the simulator until SIGINT or SIGTERM (the `ticker sim` command)."""
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    simulator = Simulator(settings)
    await simulator.start()

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
        logger.info("simulator stopping connections=%d", len(simulator.registry))
    finally:
        await simulator.stop()

"""A simulator on its own event loop in a background thread.

For synchronous callers (pytest, benchmarks, the service's own integration
tests) that want a simulator in-process without owning an event loop:

    with SimulatorThread(Settings(sim_ws_port=0, sim_rest_port=0)) as sim:
        KiteConnect("k", access_token="t", root=sim.rest_url.rstrip("/"))
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from ticker.config import Settings
from ticker.simulator.server import Simulator

START_TIMEOUT_S = 10.0


class SimulatorThread:
    """Starts a `Simulator` in a daemon thread and stops it on request or exit."""

    def __init__(self, settings: Settings, **simulator_options: Any) -> None:
        self._settings = settings
        self._options = simulator_options
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._simulator: Simulator | None = None

    @property
    def simulator(self) -> Simulator:
        if self._simulator is None:
            raise RuntimeError("the simulator thread has not started; call start()")
        return self._simulator

    @property
    def ws_url(self) -> str:
        return self.simulator.ws_url

    @property
    def rest_url(self) -> str:
        return self.simulator.rest_url

    def start(self, timeout_s: float = START_TIMEOUT_S) -> SimulatorThread:
        """Start serving and return once both ports listen; re-raises start errors."""
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._main(),),
            name="ticker-simulator",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"simulator did not start within {timeout_s} s")
        if self._error is not None:
            self._thread.join(timeout_s)
            raise self._error
        return self

    def stop(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Close every connection (code 1000), stop both servers, join the thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"simulator did not stop within {timeout_s} s")
        self._thread = None

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            self._simulator = Simulator(self._settings, **self._options)
            await self._simulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._simulator.stop()

"""A local stand-in for Zerodha Kite Connect's market data.

It speaks Kite's ticker WebSocket protocol (binary tick frames, JSON commands,
handshake refusals) and serves the REST routes the service uses (instruments
dump, historical candles), so the official `kiteconnect` client runs against it
unchanged. Under /_sim/ on the REST port it adds a debug API of its own
(`debug`) and switches that make it fail the way Kite does (`switches`).

Start it with `ticker sim` or `python -m ticker.simulator` (ports from
TICKER_SIM_WS_PORT / TICKER_SIM_REST_PORT), or in-process with `Simulator`
(asyncio) or `SimulatorThread` (a background thread).
"""

from ticker.simulator.server import Simulator, serve
from ticker.simulator.threaded import SimulatorThread

__all__ = ["Simulator", "SimulatorThread", "serve"]

"""The ticker WebSocket: Kite's handshake checks, client commands, tick frames.

Refusals happen on the HTTP upgrade, with the status codes Kite uses (403 for bad
credentials, 429 past the connections an api_key may hold), so the official
client reports them exactly as it would against Kite.

Each accepted connection runs two tasks: the request handler reads client
commands, and a pump sends one frame per tick cycle. A slow client only delays
its own pump, which then skips to the latest cycle rather than queueing frames.

Pings and the client's close frame are answered here rather than by aiohttp, so
that a silenced connection (see `switches`) truly sends nothing: no ticks, no
heartbeats, no pongs, no error frames, no close reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import WSMsgType, web

from ticker.simulator.clock import TickClock
from ticker.simulator.connections import Connection, ConnectionRegistry
from ticker.simulator.credentials import Credentials
from ticker.simulator.market import Market
from ticker.simulator.packets import HEARTBEAT
from ticker.simulator.subscriptions import (
    MODE,
    InvalidCommand,
    Subscriptions,
    parse_command,
)
from ticker.simulator.universe import Universe

logger = logging.getLogger(__name__)

# A connection with nothing to stream hears a heartbeat about this often.
HEARTBEAT_INTERVAL_S = 1.0
# Pumps wake on cycle boundaries, so allow a little early for a heartbeat due.
_HEARTBEAT_SLACK_S = 0.1
# Kite's reason phrase for the connection limit, as its clients report it.
_TOO_MANY_REASON = "TooManyRequests"


class TickerEndpoint:
    """The aiohttp handler for every path of the ticker port."""

    def __init__(
        self,
        universe: Universe,
        market: Market,
        clock: TickClock,
        credentials: Credentials,
        registry: ConnectionRegistry,
    ) -> None:
        self._universe = universe
        self._market = market
        self._clock = clock
        self._credentials = credentials
        self._registry = registry

    async def handle(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(compress=False, autoping=False, autoclose=False)
        if not socket.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade\n")

        peer = request.remote or "?"
        api_key = request.query.get("api_key")
        credential = self._credentials.check(api_key, request.query.get("access_token"))
        if credential is None:
            self._registry.refused_forbidden += 1
            logger.info("ticker refused api_key=%s peer=%s status=403", api_key, peer)
            return web.Response(status=403, text="invalid api_key or access_token\n")

        subscriptions = Subscriptions(
            credential.max_instruments_per_connection, self._universe
        )
        connection = self._registry.open(credential, peer, subscriptions)
        if connection is None:
            logger.info(
                "ticker refused api_key=%s peer=%s status=429 live=%d",
                api_key,
                peer,
                self._registry.count(credential.api_key),
            )
            return web.Response(
                status=429, reason=_TOO_MANY_REASON, text="too many connections\n"
            )

        client_code: int | None = None
        # Set before the handshake, so a drop switch can cut even a half-open one.
        connection.transport = request.transport
        try:
            await socket.prepare(request)
            connection.socket = socket
            logger.info(
                "ticker connected id=%d account=%s api_key=%s peer=%s",
                connection.id,
                credential.account_id,
                api_key,
                peer,
            )
            pump = asyncio.create_task(self._pump(connection, socket))
            try:
                client_code = await self._read(connection, socket)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        finally:
            closure = self._registry.close(connection, client_code)
            logger.info(
                "ticker disconnected id=%d api_key=%s code=%s closed_by=%s "
                "reason=%s frames=%d ticks=%d",
                connection.id,
                api_key,
                socket.close_code,
                closure.closed_by,
                closure.reason,
                connection.frames_sent,
                connection.ticks_sent,
            )
        return socket

    async def _read(
        self, connection: Connection, socket: web.WebSocketResponse
    ) -> int | None:
        """Handle client frames until the socket ends; the client's close code."""
        while True:
            message = await socket.receive()
            kind = message.type
            if kind == WSMsgType.TEXT:
                await self._on_text(connection, socket, message.data)
            elif kind == WSMsgType.PING:
                if not connection.silenced:
                    with contextlib.suppress(ConnectionError):
                        await socket.pong(message.data)
            elif kind == WSMsgType.CLOSE:
                await self._on_client_close(connection, socket)
                return int(message.data)
            elif kind in (WSMsgType.CLOSING, WSMsgType.CLOSED):
                return None
            elif kind == WSMsgType.ERROR:
                # A connection the simulator cut itself fails here as expected.
                level = (
                    logging.DEBUG if connection.ended_by_simulator else logging.WARNING
                )
                logger.log(
                    level,
                    "ticker read failed id=%d error=%s",
                    connection.id,
                    socket.exception(),
                )
            elif kind == WSMsgType.BINARY:
                logger.debug("ticker binary frame ignored id=%d", connection.id)

    async def _on_client_close(
        self, connection: Connection, socket: web.WebSocketResponse
    ) -> None:
        if connection.silenced:
            # A mute server never answers; the client gives up on the handshake.
            if connection.transport is not None:
                connection.transport.abort()
            return
        # The client is closing the TCP connection too: do not wait to drain.
        await socket.close(drain=False)

    async def _on_text(
        self, connection: Connection, socket: web.WebSocketResponse, text: str
    ) -> None:
        connection.record_message(text)
        try:
            command = parse_command(text)
        except InvalidCommand as exc:
            logger.info("ticker bad message id=%d reason=%s", connection.id, exc)
            await self._send_error(connection, socket, str(exc))
            return

        error = connection.subscriptions.apply(command)
        logger.debug(
            "ticker command id=%d action=%s mode=%s tokens=%d subscribed=%d",
            connection.id,
            command.action,
            command.mode,
            len(command.tokens),
            len(connection.subscriptions),
        )
        if error:
            logger.info(
                "ticker subscribe refused id=%d reason=%s", connection.id, error
            )
            await self._send_error(connection, socket, error)
        if command.action == MODE:
            await self._send_snapshot(connection, socket, command.tokens)

    async def _send_snapshot(
        self,
        connection: Connection,
        socket: web.WebSocketResponse,
        tokens: tuple[int, ...],
    ) -> None:
        """Send the current quote of tokens whose mode was just set, at once.

        Clients set the mode right after subscribing, so this is a new token's first
        tick, in the mode asked for, without waiting for the next cycle.
        """
        modes = connection.subscriptions.modes
        wanted = {token: modes[token] for token in tokens if token in modes}
        if not wanted or connection.silenced or socket.closed:
            return
        frame = self._market.frame(wanted, self._clock.next_cycle() - 1)
        with contextlib.suppress(ConnectionError):
            await socket.send_bytes(frame)
        connection.record_frame(len(wanted), len(frame))

    async def _send_error(
        self, connection: Connection, socket: web.WebSocketResponse, text: str
    ) -> None:
        if connection.silenced:
            logger.debug("ticker error withheld id=%d text=%s", connection.id, text)
            return
        connection.errors_sent.append(text)
        with contextlib.suppress(ConnectionError):
            await socket.send_str(json.dumps({"type": "error", "data": text}))

    async def _pump(
        self, connection: Connection, socket: web.WebSocketResponse
    ) -> None:
        """Send a frame every cycle, or heartbeats while nothing is subscribed."""
        clock = self._clock
        try:
            while not socket.closed:
                cycle = clock.next_cycle()
                # Sleep in slices no longer than the heartbeat interval, so a
                # slow tick interval still leaves no silence longer than that.
                while (delay := clock.seconds_until(cycle)) > 0:
                    await asyncio.sleep(min(delay, HEARTBEAT_INTERVAL_S))
                    if clock.seconds_until(cycle) > 0:
                        await self._heartbeat_if_idle(connection, socket)

                if connection.silenced:
                    continue
                modes = connection.subscriptions.modes
                if not modes:
                    await self._heartbeat_if_idle(connection, socket)
                    continue
                frame = self._market.frame(modes, cycle)
                await socket.send_bytes(frame)
                connection.record_frame(len(modes), len(frame))
        except ConnectionError as exc:
            logger.debug("ticker pump stopped id=%d reason=%r", connection.id, exc)

    async def _heartbeat_if_idle(
        self, connection: Connection, socket: web.WebSocketResponse
    ) -> None:
        if (
            socket.closed
            or connection.silenced
            or connection.idle_s() < HEARTBEAT_INTERVAL_S - _HEARTBEAT_SLACK_S
        ):
            return
        await socket.send_bytes(HEARTBEAT)
        connection.record_heartbeat()

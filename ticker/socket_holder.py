"""One account's live Kite ticker connections and the instruments on each.

The official `KiteTicker` runs on Twisted's reactor, which is not thread-safe and can
run only once per process (KITE-NOTES §1.9). So the holder starts the reactor on a
thread of its own, never stops it, and does every socket write and every read of its
bookkeeping on that thread: callers on other threads (Celery tasks) go through
`blockingCallFromThread`, which also hands back the reactor side's result or error.

Connections open lazily: the first at start, another only when every open one is
full, up to the account's limit, since Kite counts connections per api_key.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kiteconnect import KiteTicker
from twisted.internet import reactor
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import blockingCallFromThread

from ticker.errors import CapacityExhausted, MalformedFrame, SubscriptionRefused
from ticker.subscriptions import Mode
from ticker.ticks import packet_tokens

log = logging.getLogger(__name__)

# Kite's clean-close code, sent when the worker stops, so the server frees the slot.
CLOSE_NORMAL = 1000
# Tokens per subscribe or mode message when a whole set is (re)sent at once.
TOKENS_PER_MESSAGE = 500
# Twisted's reconnect delay grows up to this; KiteTicker refuses less than 5 s.
RECONNECT_MAX_DELAY_S = 5
RECONNECT_MAX_TRIES = 300
# Kite sends a heartbeat every second even with nothing subscribed, and the client
# sends no pings (KITE-NOTES §1.5): this long without any frame means a dead socket.
SILENCE_TIMEOUT_S = 5.0
WATCHDOG_EVERY_S = 1.0
# After the client gives up reconnecting, the holder tries again this much later.
REVIVE_AFTER_S = 60.0
# Kite never acknowledges a subscribe; it refuses one with an error text frame. A
# new token counts as subscribed once a tick for it arrives, or once this long has
# passed with no error (an instrument that does not trade sends nothing).
CONFIRM_WINDOW_S = 1.0

_reactor_started = threading.Lock()


def ensure_reactor_running() -> None:
    """Run Twisted's reactor on a daemon thread, once per process."""
    with _reactor_started:
        if reactor.running:  # type: ignore[attr-defined]
            return
        running = threading.Event()
        reactor.callWhenRunning(running.set)  # type: ignore[attr-defined]
        thread = threading.Thread(
            target=reactor.run,  # type: ignore[attr-defined]
            kwargs={"installSignalHandlers": False},
            name="kite-reactor",
            daemon=True,
        )
        thread.start()
        if not running.wait(timeout=10):
            raise RuntimeError("Twisted reactor did not start within 10 s")


class Phase(str, enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    AUTH_FAILED = "auth_failed"  # Kite refused the access token: no retry loop
    GAVE_UP = "gave_up"  # retries exhausted; revived after REVIVE_AFTER_S
    CLOSED = "closed"


@dataclass(frozen=True)
class ConnectionState:
    index: int
    phase: Phase
    tokens: int
    last_frame_age_s: float | None
    refusals: int = 0  # subscribes Kite answered with an error text frame
    reconnects: int = 0  # attempts to dial again after the connection was lost

    @property
    def open(self) -> bool:
        return self.phase is Phase.OPEN


@dataclass
class _Awaiting:
    """A token sent but not yet seen streaming, and whoever waits to know."""

    timer: DelayedCall
    waiters: list[Deferred[None]] = field(default_factory=list)


class _Connection:
    """One KiteTicker and the tokens it carries, touched only on the reactor thread."""

    def __init__(self, index: int, ticker: KiteTicker) -> None:
        self.index = index
        self.ticker = ticker
        self.tokens: dict[int, Mode] = {}
        self.opened_once = False
        self.phase = Phase.CONNECTING
        self.is_open = threading.Event()
        self.closed = threading.Event()
        self.last_frame_at: float | None = None
        # New tokens sent on this connection and not yet streaming or refused.
        self.awaiting: dict[int, _Awaiting] = {}
        self.refusals = 0
        self.reconnects = 0


class SocketHolder:
    """Applies subscribe, unsubscribe and mode changes to one account's live sockets.

    A change touches only its own token: existing subscriptions keep streaming.
    """

    def __init__(
        self,
        account_id: str,
        api_key: str,
        access_token: str,
        ws_root: str,
        max_instruments_per_connection: int,
        max_connections: int,
        on_frame: Callable[[bytes], None],
        silence_timeout_s: float = SILENCE_TIMEOUT_S,
        reconnect_max_tries: int = RECONNECT_MAX_TRIES,
        revive_after_s: float = REVIVE_AFTER_S,
        confirm_window_s: float = CONFIRM_WINDOW_S,
    ) -> None:
        self.account_id = account_id
        self._api_key = api_key
        self._access_token = access_token
        self._ws_root = ws_root
        self._per_connection = max_instruments_per_connection
        self._max_connections = max_connections
        self._on_frame = on_frame
        self._silence_timeout_s = silence_timeout_s
        self._reconnect_max_tries = reconnect_max_tries
        self._revive_after_s = revive_after_s
        self._confirm_window_s = confirm_window_s
        self._connections: list[_Connection] = []
        self._where: dict[int, _Connection] = {}
        # Tokens Kite refused, with its reason, until they are subscribed again.
        self._refused: dict[int, str] = {}
        self._watchdog: LoopingCall | None = None
        self._stopping = False

    # -- called from any thread -------------------------------------------------

    def start(self, initial: Mapping[int, Mode]) -> None:
        """Open as many connections as the initial set needs and subscribe it on open."""
        ensure_reactor_running()
        blockingCallFromThread(reactor, self._start, dict(initial))

    def subscribe(self, instrument_token: int, mode: Mode) -> None:
        """Put a token on a socket in `mode`, or change its mode if it is on one."""
        blockingCallFromThread(reactor, self._subscribe, instrument_token, mode)

    def subscribe_many(self, changes: Mapping[int, Mode]) -> None:
        """Put many tokens on the sockets at once, each in its mode.

        Kite takes lists, so new tokens go out in one subscribe and one mode message
        per connection and mode, not one pair a token.
        """
        blockingCallFromThread(reactor, self._subscribe_many, dict(changes))

    def wait_confirmed(self, instrument_token: int) -> None:
        """Return once Kite streams a newly sent token; raise SubscriptionRefused if not.

        Kite never acknowledges a subscribe, but refuses one with an error text
        frame: a token counts as subscribed at its first tick, or after the
        confirmation window passes with no error. A refused token is off the socket.
        """
        blockingCallFromThread(reactor, self._confirmation, instrument_token)

    def unsubscribe(self, instrument_token: int) -> None:
        """Take a token off its socket; a token not on any socket is left alone."""
        blockingCallFromThread(reactor, self._unsubscribe, instrument_token)

    def wait_until_open(self, instrument_token: int, timeout_s: float) -> bool:
        """Whether the connection carrying a token is open, waiting up to `timeout_s`.

        A token recorded while its connection is down is sent by the client's own
        resubscribe when it reconnects; this is how a caller knows that happened.
        """
        connection = self._where.get(instrument_token)
        return connection is not None and connection.is_open.wait(timeout_s)

    def tokens(self) -> dict[int, Mode]:
        """Every token on the sockets with its mode, as the reactor thread sees it."""
        return blockingCallFromThread(  # type: ignore[no-any-return]
            reactor, lambda: {t: c.tokens[t] for t, c in self._where.items()}
        )

    def mode_of(self, instrument_token: int) -> Mode | None:
        connection = self._where.get(instrument_token)
        return connection.tokens.get(instrument_token) if connection else None

    def states(self) -> list[ConnectionState]:
        now = time.monotonic()
        return [
            ConnectionState(
                index=c.index,
                phase=c.phase,
                tokens=len(c.tokens),
                last_frame_age_s=None if c.last_frame_at is None else now - c.last_frame_at,
                refusals=c.refusals,
                reconnects=c.reconnects,
            )
            for c in list(self._connections)
        ]

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close every connection cleanly (code 1000) and wait for the server's reply."""
        if not reactor.running:  # type: ignore[attr-defined]
            return
        connections = blockingCallFromThread(reactor, self._close_all)
        deadline = time.monotonic() + timeout_s
        for connection in connections:
            connection.closed.wait(max(deadline - time.monotonic(), 0))
        log.info("sockets closed account=%s connections=%d", self.account_id, len(connections))

    def reauthorize(self, access_token: str) -> None:
        """Reconnect every connection Kite refused, with a new access token."""
        blockingCallFromThread(reactor, self._reauthorize, access_token)

    # -- on the reactor thread ----------------------------------------------------

    def _start(self, initial: dict[int, Mode]) -> None:
        if not self._connections:
            self._open_connection()
        self._subscribe_many(initial)
        if self._watchdog is None:
            self._watchdog = LoopingCall(self._watch)
            self._watchdog.start(WATCHDOG_EVERY_S, now=False)

    def _watch(self) -> None:
        """Drop an open connection that went silent, so the client reconnects."""
        now = time.monotonic()
        for connection in self._connections:
            if connection.phase is not Phase.OPEN or connection.last_frame_at is None:
                continue
            silent_s = now - connection.last_frame_at
            if silent_s > self._silence_timeout_s and connection.ticker.ws is not None:
                log.warning("socket silent, dropping account=%s connection=%d silent_s=%.1f",
                            self.account_id, connection.index, silent_s)
                connection.phase = Phase.RECONNECTING
                connection.is_open.clear()
                connection.ticker.ws.dropConnection(abort=True)

    def _subscribe(self, token: int, mode: Mode) -> None:
        self._subscribe_many({token: mode})

    def _subscribe_many(self, changes: dict[int, Mode]) -> None:
        fresh: dict[int, tuple[_Connection, list[int]]] = {}
        moded: dict[tuple[int, Mode], tuple[_Connection, list[int]]] = {}
        for token, mode in changes.items():
            self._refused.pop(token, None)
            connection = self._where.get(token) or self._connection_with_room()
            previous = connection.tokens.get(token)
            if previous is mode:
                continue
            connection.tokens[token] = mode
            self._where[token] = connection
            if not connection.opened_once:
                continue  # sent with the rest when the connection first opens
            if previous is None:
                fresh.setdefault(connection.index, (connection, []))[1].append(token)
            moded.setdefault((connection.index, mode), (connection, []))[1].append(token)
        # New tokens first, in one subscribe per connection; then each mode's list.
        for connection, tokens in fresh.values():
            for batch in _chunks(tokens):
                connection.ticker.subscribe(batch)
        for (_, mode), (connection, tokens) in moded.items():
            for batch in _chunks(tokens):
                connection.ticker.set_mode(mode.value, batch)
            log.debug("tokens sent account=%s count=%d mode=%s connection=%d",
                      self.account_id, len(tokens), mode.value, connection.index)
        for connection, tokens in fresh.values():
            if connection.phase is Phase.OPEN:
                for token in tokens:
                    self._await_confirmation(connection, token)

    def _await_confirmation(self, connection: _Connection, token: int) -> None:
        if token not in connection.awaiting:
            timer = reactor.callLater(  # type: ignore[attr-defined]
                self._confirm_window_s, self._confirm, connection, token
            )
            connection.awaiting[token] = _Awaiting(timer)

    def _confirmation(self, token: int) -> Deferred[None] | None:
        if token in self._refused:
            raise SubscriptionRefused(self._refused[token])
        connection = self._where.get(token)
        if connection is None or token not in connection.awaiting:
            return None
        waiter: Deferred[None] = Deferred()
        connection.awaiting[token].waiters.append(waiter)
        return waiter

    def _confirm(self, connection: _Connection, token: int) -> None:
        awaiting = connection.awaiting.pop(token)
        if awaiting.timer.active():
            awaiting.timer.cancel()
        for waiter in awaiting.waiters:
            waiter.callback(None)

    def _refuse_awaiting(self, connection: _Connection, reason: Any) -> None:
        # Kite's error text names no token; every token still waiting on this
        # connection may be the one refused, so none is taken as subscribed.
        for token, awaiting in list(connection.awaiting.items()):
            del connection.awaiting[token]
            awaiting.timer.cancel()
            self._unsubscribe(token)
            connection.refusals += 1
            message = (f"Kite refused instrument {token} on account "
                       f"{self.account_id!r}: {reason}")
            self._refused[token] = message
            log.error("subscribe refused account=%s token=%s connection=%d reason=%s",
                      self.account_id, token, connection.index, reason)
            for waiter in awaiting.waiters:
                waiter.errback(SubscriptionRefused(message))

    def _unsubscribe(self, token: int) -> None:
        connection = self._where.pop(token, None)
        if connection is None:
            return
        del connection.tokens[token]
        if token in connection.awaiting:
            self._confirm(connection, token)  # nothing left to refuse
        if connection.opened_once:
            connection.ticker.unsubscribe([token])

    def _connection_with_room(self) -> _Connection:
        for connection in self._connections:
            if len(connection.tokens) < self._per_connection:
                return connection
        if len(self._connections) < self._max_connections:
            return self._open_connection()
        raise CapacityExhausted(
            f"account {self.account_id!r} carries {len(self._where)} instruments on "
            f"{len(self._connections)} connections, its limit; place the token elsewhere"
        )

    def _open_connection(self) -> _Connection:
        connection = _Connection(len(self._connections), self._new_ticker())
        self._connections.append(connection)
        self._dial(connection)
        return connection

    def _new_ticker(self) -> KiteTicker:
        return KiteTicker(
            self._api_key,
            self._access_token,
            root=self._ws_root,
            reconnect_max_delay=RECONNECT_MAX_DELAY_S,
            reconnect_max_tries=self._reconnect_max_tries,
        )

    def _dial(self, connection: _Connection) -> None:
        ticker = connection.ticker
        ticker.on_open = lambda ws: self._on_open(connection)
        ticker.on_close = lambda ws, code, reason: self._on_close(connection, code, reason)
        ticker.on_error = lambda ws, code, reason: self._on_error(connection, code, reason)
        ticker.on_message = lambda ws, payload, binary: self._on_message(
            connection, payload, binary
        )
        ticker.on_reconnect = lambda ws, attempt: self._on_reconnect(connection, attempt)
        ticker.on_noreconnect = lambda ws: self._on_gave_up(connection)
        connection.phase = Phase.CONNECTING
        # The reactor already runs on our thread, so connect() only dials.
        ticker.connect(threaded=True)
        log.info("socket connecting account=%s connection=%d root=%s",
                 self.account_id, connection.index, self._ws_root,
                 extra={"event": "socket_connecting"})

    def _reauthorize(self, access_token: str) -> None:
        self._access_token = access_token
        for connection in self._connections:
            if connection.phase is Phase.AUTH_FAILED:
                # The token is part of the client's URL: a new client is needed.
                self._replace_ticker(connection)

    def _replace_ticker(self, connection: _Connection) -> None:
        """Dial a fresh client for a connection whose client stopped for good.

        The connection's tokens go out again when the new client first opens.
        """
        connection.ticker = self._new_ticker()
        connection.opened_once = False
        # A dial after the connection was lost, as the client's own retries are.
        connection.reconnects += 1
        self._dial(connection)

    def _on_reconnect(self, connection: _Connection, attempt: int) -> None:
        connection.reconnects += 1
        log.warning("socket reconnecting account=%s connection=%d attempt=%d",
                    self.account_id, connection.index, attempt,
                    extra={"event": "socket_reconnecting"})

    def _on_gave_up(self, connection: _Connection) -> None:
        if connection.phase is Phase.AUTH_FAILED or self._stopping:
            return
        connection.phase = Phase.GAVE_UP
        log.error("socket gave up reconnecting account=%s connection=%d; again in %.0fs",
                  self.account_id, connection.index, self._revive_after_s)
        reactor.callLater(  # type: ignore[attr-defined]
            self._revive_after_s, self._revive, connection
        )

    def _revive(self, connection: _Connection) -> None:
        # The client keeps no handle to redial with once it gave up: a new one.
        if connection.phase is Phase.GAVE_UP and not self._stopping:
            self._replace_ticker(connection)

    def _on_open(self, connection: _Connection) -> None:
        if not connection.opened_once:
            # The client resubscribes by itself on every later open (KITE-NOTES §1.8);
            # only the first carries what was recorded before the socket existed.
            connection.opened_once = True
            self._send_all(connection)
        connection.last_frame_at = time.monotonic()
        connection.phase = Phase.OPEN
        connection.closed.clear()
        connection.is_open.set()
        log.info("socket open account=%s connection=%d tokens=%d",
                 self.account_id, connection.index, len(connection.tokens),
                 extra={"event": "socket_open"})

    def _send_all(self, connection: _Connection) -> None:
        by_mode: dict[Mode, list[int]] = {}
        for token, mode in connection.tokens.items():
            by_mode.setdefault(mode, []).append(token)
        for mode, tokens in by_mode.items():
            for batch in _chunks(tokens):
                connection.ticker.subscribe(batch)
                connection.ticker.set_mode(mode.value, batch)
                for token in batch:
                    self._await_confirmation(connection, token)

    def _on_close(self, connection: _Connection, code: Any, reason: Any) -> None:
        connection.is_open.clear()
        connection.closed.set()
        if self._stopping:
            connection.phase = Phase.CLOSED
        elif "403" in str(reason):
            # A refused access token stays refused: retrying would only hammer Kite
            # with 50 upgrades. A new token (reauthorize) brings the socket back.
            connection.phase = Phase.AUTH_FAILED
            connection.ticker.stop_retry()
            log.error("access token refused account=%s connection=%d; set a new token",
                      self.account_id, connection.index,
                      extra={"event": "access_token_refused"})
            return
        elif connection.phase is not Phase.GAVE_UP:
            connection.phase = Phase.RECONNECTING
        # Our own stop closes cleanly and is no cause for concern; any other close is.
        level = logging.INFO if self._stopping else logging.WARNING
        log.log(level, "socket closed account=%s connection=%d code=%s reason=%s",
                self.account_id, connection.index, code, reason,
                extra={"event": "socket_closed"})

    def _on_error(self, connection: _Connection, code: Any, reason: Any) -> None:
        # Code 0 is a Kite error text frame on a connection that stays up.
        log.error("socket error account=%s connection=%d code=%s reason=%s",
                  self.account_id, connection.index, code, reason)
        if code == 0 and connection.awaiting:
            self._refuse_awaiting(connection, reason)

    def _on_message(self, connection: _Connection, payload: bytes, binary: bool) -> None:
        connection.last_frame_at = time.monotonic()
        if binary and len(payload) > 1:  # one byte is a heartbeat
            if connection.awaiting:
                self._confirm_streaming(connection, payload)
            self._on_frame(payload)

    def _confirm_streaming(self, connection: _Connection, frame: bytes) -> None:
        try:
            tokens = packet_tokens(frame)
        except MalformedFrame:
            return  # the fan-out reports it; it confirms nothing
        for token in tokens:
            if token in connection.awaiting:
                self._confirm(connection, token)

    def _close_all(self) -> list[_Connection]:
        self._stopping = True
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        for connection in self._connections:
            connection.ticker.close(CLOSE_NORMAL, "worker stopping")
            if not connection.is_open.is_set():
                connection.closed.set()
        return list(self._connections)


def _chunks(tokens: list[int]) -> list[list[int]]:
    """Kite's messages stay small: at most TOKENS_PER_MESSAGE tokens each."""
    step = TOKENS_PER_MESSAGE
    return [tokens[i : i + step] for i in range(0, len(tokens), step)]

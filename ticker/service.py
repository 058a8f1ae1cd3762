"""The use cases behind the HTTP API: request, withdraw and inspect subscriptions.

The service records what back ends ask for and hands each change to its account's
worker; it never touches a Kite socket. How a change reaches the worker is a port
(`TaskSender`), so the core holds no Celery code.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import redis
from psycopg_pool import ConnectionPool

from ticker import backfill_presence
from ticker.accounts import Accounts
from ticker.backfill import Candle
from ticker.errors import SubscriptionNotFound, TickerError, UnknownInstrument
from ticker.events import read_newest, read_stream
from ticker.fanout import LastPrice, last_prices_key, read_last_prices
from ticker.instruments import Instrument, InstrumentUniverse
from ticker.liveness import (
    alive_accounts,
    placeable_accounts,
    socket_state,
    worker_states,
)
from ticker.storage import candles as candle_store
from ticker.storage import requesters as requester_store
from ticker.storage import subscriptions as store
from ticker.subscriptions import DEFAULT_CLIENT_ID, Mode, Status, Subscription
from ticker.ticks import IST

log = logging.getLogger(__name__)


class TaskSender(Protocol):
    def subscribe(self, account_id: str, instrument_token: int, mode: Mode,
                  version: int, task_id: str, backfill: bool = False) -> None: ...

    def unsubscribe(self, account_id: str, instrument_token: int, version: int,
                    task_id: str) -> None: ...

    def subscribe_batch(self, account_id: str, changes: list[tuple[int, Mode, int]],
                        task_id: str, backfill: list[int]) -> None: ...


class DispatchFailed(TickerError):
    """The task that would apply a change could not be handed to the broker."""


@dataclass(frozen=True)
class ChangeOutcome:
    subscription: Subscription
    accepted: bool  # whether a task was queued; False when the socket needs no change


@dataclass(frozen=True)
class MetricsSnapshot:
    """The figures /metrics turns into Prometheus series; None where a source failed."""

    accounts: Accounts
    counts: dict[tuple[str, str], int] | None  # (account, status) -> subscriptions
    alive: set[str] | None
    worker_states: dict[str, dict[str, Any]] | None
    queue_backlogs: dict[str, int]
    backfill_workers: int | None = None


class SubscriptionService:
    def __init__(
        self,
        accounts: Accounts,
        pool: ConnectionPool,
        client: redis.Redis,
        universe: InstrumentUniverse,
        sender: TaskSender,
        key_prefix: str,
        events_stream: str,
        queue_of: Callable[[str], str] | None = None,
        broker: redis.Redis | None = None,
        backfill_queue: str | None = None,
    ) -> None:
        self._accounts = accounts
        self._pool = pool
        self._client = client
        self._universe = universe
        self._sender = sender
        self._key_prefix = key_prefix
        # The broker's own view of each account's waiting tasks, when it is Redis.
        self._queue_of = queue_of
        self._broker = broker
        self._backfill_queue = backfill_queue
        self._events_stream = events_stream

    def subscribe(self, instrument_token: int, mode: Mode | None,
                  client_id: str = DEFAULT_CLIENT_ID, must_hold: bool = False
                  ) -> ChangeOutcome:
        """Record that `client_id` wants a token; place it on a live account with room.

        The socket carries the highest mode the token's requesters ask for. With no
        mode, the requester keeps its own, or takes what is live (QUOTE, Kite's
        default, for a token not yet streaming). `must_hold` (PATCH) changes only
        a subscription the requester already holds.
        """
        instrument = self._universe.lookup(instrument_token)
        if mode is None:
            mode = self._default_mode(instrument_token, client_id)
        alive = self._placeable_accounts()
        task_id = str(uuid.uuid4())
        with self._pool.connection() as conn:
            placement = store.place(
                conn,
                instrument,
                mode,
                [(a.id, a.capacity) for a in self._accounts],
                alive.__contains__,
                task_id,
                client_id=client_id,
                must_hold=must_hold,
            )
            sub = placement.subscription
            if not placement.task_needed:
                # Recorded; the socket already carries (or is about to) what it needs.
                return ChangeOutcome(sub, accepted=False)
            try:
                self._sender.subscribe(sub.account_id, instrument_token, sub.requested_mode,
                                       sub.version, task_id, backfill=placement.created)
            except Exception as exc:
                store.undo(conn, sub, placement.previous, client_id, placement.previous_hold)
                raise DispatchFailed(f"could not queue the subscribe: {exc}") from exc
        log.info("subscription accepted token=%s mode=%s client=%s account=%s task=%s",
                 instrument_token, sub.requested_mode.value, client_id, sub.account_id,
                 task_id, extra={"event": "subscription_accepted"})
        return ChangeOutcome(sub, accepted=True)

    def resolve(self, instrument_token: int | None = None, exchange: str | None = None,
                tradingsymbol: str | None = None) -> Instrument:
        """The instrument a request names, by token or by exchange and tradingsymbol."""
        if instrument_token is not None:
            return self._universe.lookup(instrument_token)
        if exchange is None or tradingsymbol is None:
            raise UnknownInstrument("name an instrument_token, or an exchange and a "
                                    "tradingsymbol")
        return self._universe.lookup_symbol(exchange, tradingsymbol)

    def subscribe_many(self, wanted: Sequence[tuple[Instrument, Mode | None]],
                       client_id: str = DEFAULT_CLIENT_ID
                       ) -> list[ChangeOutcome | TickerError]:
        """Subscribe a batch for one requester: each item's outcome, in order.

        Items are placed in one transaction, each on its own merits (one without room
        is refused, the rest stand), and each account the batch lands on gets one
        task for all of its tokens, which its worker sends to Kite as lists.
        """
        resolved = [(instrument, mode or self._default_mode(instrument.instrument_token,
                                                            client_id))
                    for instrument, mode in wanted]
        alive = self._placeable_accounts()
        task_ids: dict[str, str] = {}
        with self._pool.connection() as conn:
            placed = store.place_many(
                conn, resolved, [(a.id, a.capacity) for a in self._accounts],
                alive.__contains__,
                lambda account_id: task_ids.setdefault(account_id, str(uuid.uuid4())),
                client_id,
            )
            by_account: dict[str, dict[int, store.Placement]] = {}
            for outcome in placed:
                if isinstance(outcome, store.Placement) and outcome.task_needed:
                    sub = outcome.subscription
                    # A token named twice: its latest placement is what the socket needs.
                    by_account.setdefault(sub.account_id, {})[sub.instrument_token] = outcome
            failed = self._dispatch_batches(conn, by_account, task_ids, client_id)
        outcomes: list[ChangeOutcome | TickerError] = []
        for outcome in placed:
            if isinstance(outcome, TickerError):
                outcomes.append(outcome)
            elif outcome.subscription.account_id in failed and outcome.task_needed:
                outcomes.append(failed[outcome.subscription.account_id])
            else:
                outcomes.append(ChangeOutcome(outcome.subscription, outcome.task_needed))
        log.info("batch accepted client=%s items=%d tasks=%s", client_id, len(wanted),
                 ",".join(f"{a}:{t}" for a, t in task_ids.items() if a in by_account))
        return outcomes

    def _dispatch_batches(self, conn: Any, by_account: dict[str, dict[int, store.Placement]],
                          task_ids: dict[str, str], client_id: str
                          ) -> dict[str, DispatchFailed]:
        """Send each account its one task; undo the rows of an account whose task failed."""
        failed: dict[str, DispatchFailed] = {}
        for account_id, placements in by_account.items():
            subs = [p.subscription for p in placements.values()]
            try:
                self._sender.subscribe_batch(
                    account_id,
                    [(s.instrument_token, s.requested_mode, s.version) for s in subs],
                    task_ids[account_id],
                    backfill=[p.subscription.instrument_token
                              for p in placements.values() if p.created],
                )
            except Exception as exc:
                for placement in placements.values():
                    store.undo(conn, placement.subscription, placement.previous, client_id,
                               placement.previous_hold)
                failed[account_id] = DispatchFailed(
                    f"could not queue the subscribe for account {account_id}: {exc}")
        return failed

    def unsubscribe(self, instrument_token: int,
                    client_id: str = DEFAULT_CLIENT_ID) -> ChangeOutcome:
        """Take `client_id` off a token; the last one out queues the unsubscribe."""
        task_id = str(uuid.uuid4())
        with self._pool.connection() as conn:
            withdrawal = store.withdraw(conn, instrument_token, client_id, task_id)
            sub = withdrawal.subscription
            try:
                if withdrawal.change == "unsubscribe":
                    self._sender.unsubscribe(sub.account_id, instrument_token, sub.version,
                                             task_id)
                elif withdrawal.change == "mode":
                    self._sender.subscribe(sub.account_id, instrument_token,
                                           sub.requested_mode, sub.version, task_id)
            except Exception as exc:
                store.undo(conn, sub, withdrawal.previous, client_id, withdrawal.previous_hold)
                raise DispatchFailed(f"could not queue the change: {exc}") from exc
        log.info("requester left token=%s client=%s account=%s change=%s task=%s",
                 instrument_token, client_id, sub.account_id, withdrawal.change, task_id)
        return ChangeOutcome(sub, accepted=withdrawal.change is not None)

    def requesters(self, tokens: list[int]) -> dict[int, list[tuple[str, Mode]]]:
        """Who holds each of `tokens`, with the mode each asked for."""
        with self._pool.connection() as conn:
            return requester_store.by_token(conn, tokens)

    def _default_mode(self, instrument_token: int, client_id: str) -> Mode:
        with self._pool.connection() as conn:
            current = store.get(conn, instrument_token)
            held = requester_store.by_token(conn, [instrument_token]).get(instrument_token, [])
        own = [mode for client, mode in held if client == client_id]
        if own:
            return own[0]
        live = current is not None and current.status in (Status.PENDING, Status.ACTIVE)
        return current.requested_mode if live else Mode.QUOTE  # type: ignore[union-attr]

    def get(self, instrument_token: int) -> Subscription:
        with self._pool.connection() as conn:
            sub = store.get(conn, instrument_token)
        if sub is None:
            raise SubscriptionNotFound(
                f"instrument_token {instrument_token} was never subscribed"
            )
        return sub

    def list(self, account_id: str | None, status: Status | None) -> list[Subscription]:
        if account_id is not None:
            self._accounts.get(account_id)  # an unknown account is an error, not []
        with self._pool.connection() as conn:
            return store.list_subscriptions(conn, account_id, status)

    def candles(self, instrument_token: int, interval: str, start: datetime | None,
                end: datetime | None, limit: int) -> tuple[list[Candle], bool]:
        """Stored candles of a subscribed token, oldest first, and whether cut at limit."""
        self.get(instrument_token)  # 404 for a token never subscribed
        start = start or datetime.fromtimestamp(0, IST)
        end = end or datetime.now(IST)
        with self._pool.connection() as conn:
            found = candle_store.between(conn, instrument_token, interval, start, end,
                                         limit + 1)
        return found[:limit], len(found) > limit

    def events(self, after: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Stored events after stream id `after`, and whether some may be trimmed away."""
        return read_stream(self._client, self._events_stream, after, limit)

    def recent_events(self, count: int) -> list[dict[str, Any]]:
        """The newest `count` stored events, newest first (the status page)."""
        return read_newest(self._client, self._events_stream, count)

    def last_prices(self, tokens: list[int]) -> dict[int, LastPrice]:
        """The last price the workers saw for each token that has ticked."""
        return read_last_prices(self._client, last_prices_key(self._key_prefix), tokens)

    def accounts(self) -> list[dict[str, Any]]:
        """Each account's limits, how much is used, and what its worker reports."""
        with self._pool.connection() as conn:
            used = store.usage_by_account(conn)
        alive = self._alive_accounts()
        states = self._worker_states()
        return [
            {
                "account_id": a.id,
                "capacity": a.capacity,
                "max_instruments_per_connection": a.max_instruments_per_connection,
                "max_connections": a.max_connections,
                "used": used.get(a.id, 0),
                "free": max(a.capacity - used.get(a.id, 0), 0),
                "worker_alive": a.id in alive,
                "socket_state": (
                    socket_state(states.get(a.id, {}).get("connections", []))
                    if a.id in alive
                    else "down"
                ),
                "connections": states.get(a.id, {}).get("connections", []),
            }
            for a in self._accounts
        ]

    def health(self) -> dict[str, Any]:
        """Each part's state; `healthy` only when every part answers."""
        report: dict[str, Any] = {}
        configured = {a.id for a in self._accounts}
        stranded: dict[str, int] = {}
        try:
            with self._pool.connection(timeout=2) as conn:
                used = store.usage_by_account(conn)
            report["database"] = "ok"
            # Held by an account the accounts file no longer names: no worker serves
            # them, so they stream nowhere until it comes back.
            stranded = {a: n for a, n in sorted(used.items()) if a not in configured}
        except Exception as exc:
            report["database"] = f"unavailable: {type(exc).__name__}"
        try:
            self._client.ping()
            report["redis"] = "ok"
            alive = self._alive_accounts()
            states = self._worker_states()
        except redis.RedisError as exc:
            report["redis"] = f"unavailable: {type(exc).__name__}"
            alive, states = set(), {}
        backlog = self._backlogs()
        workers = {}
        for account in self._accounts:
            state = states.get(account.id, {})
            connections = state.get("connections", [])
            workers[account.id] = {
                "alive": account.id in alive,
                "state": socket_state(connections) if account.id in alive else "down",
                "connections": len(connections),
                "connections_open": sum(1 for c in connections if c.get("open")),
                "backlog": backlog.get(account.id),
                "frames_dropped": state.get("frames_dropped", 0),
                # Subscribes Kite answered with an error text frame since start.
                "refusals": sum(c.get("refusals", 0) for c in connections),
            }
        failing = [part for part in ("database", "redis") if report[part] != "ok"]
        failing += [f"workers.{aid}" for aid, w in workers.items() if w["state"] != "ok"]
        failing += [f"accounts.{aid}" for aid in stranded]
        report["workers"] = workers
        if stranded:
            report["unconfigured_accounts"] = stranded
        # Beside the streaming parts, not among them: candles can wait, ticks cannot.
        report["backfill"] = self._backfill_health()
        report["status"] = "unhealthy" if failing else "healthy"
        if failing:
            report["failing"] = failing
        return report

    def metrics_snapshot(self) -> MetricsSnapshot:
        """What /metrics reports, each source read on its own; a missing one is None."""
        counts = states = alive = backfill_workers = None
        try:
            with self._pool.connection(timeout=2) as conn:
                counts = store.count_by_account_and_status(conn)
        except Exception as exc:
            log.warning("metrics without the database: %s", type(exc).__name__)
        try:
            alive = self._alive_accounts()
            states = self._worker_states()
            backfill_workers = len(backfill_presence.running(self._client, self._key_prefix))
        except redis.RedisError as exc:
            log.warning("metrics without Redis: %s", type(exc).__name__)
        return MetricsSnapshot(self._accounts, counts, alive, states, self._backlogs(),
                               backfill_workers)

    def _alive_accounts(self) -> set[str]:
        return alive_accounts(self._client, self._key_prefix, self._accounts)

    def _placeable_accounts(self) -> set[str]:
        return placeable_accounts(self._client, self._key_prefix, self._accounts)

    def _worker_states(self) -> dict[str, dict[str, Any]]:
        return worker_states(self._client, self._key_prefix, self._accounts)

    def _backfill_health(self) -> dict[str, Any]:
        try:
            workers = backfill_presence.running(self._client, self._key_prefix)
            last = backfill_presence.last_gap_fill(self._client, self._key_prefix)
        except redis.RedisError:
            return {"state": "unknown", "workers": [], "backlog": None,
                    "last_gap_fill": None}
        backlog = None
        if self._broker is not None and self._backfill_queue is not None:
            try:
                backlog = self._broker.llen(self._backfill_queue)
            except redis.RedisError:
                pass
        if last is not None:
            last = {"at": datetime.fromtimestamp(last["at"], IST).isoformat(),
                    "queued": last["queued"]}
        return {"state": "ok" if workers else "down", "workers": workers,
                "backlog": backlog, "last_gap_fill": last}

    def _backlogs(self) -> dict[str, int]:
        if self._broker is None or self._queue_of is None:
            return {}
        try:
            pipe = self._broker.pipeline(transaction=False)
            for account in self._accounts:
                pipe.llen(self._queue_of(account.id))
            return dict(zip(self._accounts.ids, pipe.execute(), strict=True))
        except redis.RedisError:
            return {}

"""The use cases behind the HTTP API: request, withdraw and inspect subscriptions.

The service records what back ends ask for and hands each change to its account's
worker; it never touches a Kite socket. How a change reaches the worker is a port
(`TaskSender`), so the core holds no Celery code.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
import redis
from psycopg_pool import ConnectionPool

from ticker.account_worker import state_key
from ticker.accounts import Accounts
from ticker.backfill import Candle
from ticker.errors import SubscriptionNotFound, TickerError
from ticker.instruments import InstrumentUniverse
from ticker.lease import lease_key
from ticker.storage import candles as candle_store
from ticker.storage import subscriptions as store
from ticker.subscriptions import Mode, Status, Subscription
from ticker.ticks import IST

log = logging.getLogger(__name__)


# Kite sends at least a heartbeat a second: a socket this long without a frame is
# reported degraded even before the worker's watchdog drops it.
SILENT_AFTER_S = 2.5


def socket_state(connections: list[dict[str, Any]]) -> str:
    """One word for an account's sockets, from what its worker reports."""
    phases = {c.get("phase") for c in connections}
    if "auth_failed" in phases:
        return "auth_failed"
    if not connections or phases != {"open"}:
        return "degraded"
    if any((c.get("last_frame_age_s") or 0) > SILENT_AFTER_S for c in connections):
        return "degraded"
    return "ok"


class TaskSender(Protocol):
    def subscribe(self, account_id: str, instrument_token: int, mode: Mode,
                  version: int, task_id: str, backfill: bool = False) -> None: ...

    def unsubscribe(self, account_id: str, instrument_token: int, version: int,
                    task_id: str) -> None: ...


class DispatchFailed(TickerError):
    """The task that would apply a change could not be handed to the broker."""


@dataclass(frozen=True)
class SubscribeOutcome:
    subscription: Subscription
    accepted: bool  # False when the same request was already pending or live


class SubscriptionService:
    def __init__(
        self,
        accounts: Accounts,
        pool: ConnectionPool,
        client: redis.Redis,
        universe: InstrumentUniverse,
        sender: TaskSender,
        key_prefix: str,
        queue_of: Callable[[str], str] | None = None,
        broker: redis.Redis | None = None,
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

    def subscribe(self, instrument_token: int, mode: Mode) -> SubscribeOutcome:
        """Place a token on a live account with room and queue its subscribe."""
        instrument = self._universe.lookup(instrument_token)
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
            )
            sub = placement.subscription
            if not placement.task_needed:
                return SubscribeOutcome(sub, accepted=False)
            try:
                self._sender.subscribe(sub.account_id, instrument_token, mode,
                                       sub.version, task_id, backfill=placement.created)
            except Exception as exc:
                store.undo(conn, sub, placement.previous)
                raise DispatchFailed(f"could not queue the subscribe: {exc}") from exc
        log.info("subscription accepted token=%s mode=%s account=%s task=%s",
                 instrument_token, mode.value, sub.account_id, task_id)
        return SubscribeOutcome(sub, accepted=True)

    def unsubscribe(self, instrument_token: int) -> Subscription:
        """Mark a token for removal and queue the unsubscribe on its account."""
        task_id = str(uuid.uuid4())
        with self._pool.connection() as conn:
            previous = store.get(conn, instrument_token)
            sub = store.request_removal(conn, instrument_token, task_id)
            try:
                self._sender.unsubscribe(sub.account_id, instrument_token, sub.version,
                                         task_id)
            except Exception as exc:
                store.undo(conn, sub, previous)
                raise DispatchFailed(f"could not queue the unsubscribe: {exc}") from exc
        log.info("removal accepted token=%s account=%s task=%s",
                 instrument_token, sub.account_id, task_id)
        return sub

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
        try:
            with self._pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            report["database"] = "ok"
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
            }
        failing = [part for part in ("database", "redis") if report[part] != "ok"]
        failing += [f"workers.{aid}" for aid, w in workers.items() if w["state"] != "ok"]
        report["workers"] = workers
        report["status"] = "unhealthy" if failing else "healthy"
        if failing:
            report["failing"] = failing
        return report

    def _alive_accounts(self) -> set[str]:
        keys = [lease_key(self._key_prefix, a.id) for a in self._accounts]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return {a.id for a, held in zip(self._accounts, pipe.execute(), strict=True) if held}

    def _placeable_accounts(self) -> set[str]:
        """Accounts whose worker runs and whose access token Kite still accepts."""
        states = self._worker_states()
        return {
            aid
            for aid in self._alive_accounts()
            if socket_state(states.get(aid, {}).get("connections", [])) != "auth_failed"
        }

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

    def _worker_states(self) -> dict[str, dict[str, Any]]:
        ids = list(self._accounts.ids)
        raw = self._client.mget([state_key(self._key_prefix, aid) for aid in ids])
        return {aid: orjson.loads(value) for aid, value in zip(ids, raw, strict=True) if value}

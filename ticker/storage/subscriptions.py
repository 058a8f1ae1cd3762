"""The subscriptions table: the desired state every account worker converges to.

Each function runs one transaction on the connection it is given. Placement
serialises on one advisory lock, so web processes deciding at the same time can never
push an account past its limit; the primary key keeps a token on one account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ticker.capacity import AccountLoad, choose_account
from ticker.errors import (
    CapacityExhausted,
    NoLiveWorker,
    RequesterNotFound,
    SubscriptionNotFound,
    TickerError,
)
from ticker.instruments import Instrument
from ticker.storage import outbox, requesters
from ticker.subscriptions import (
    DEFAULT_CLIENT_ID,
    LIVE_STATUSES,
    Mode,
    Status,
    Subscription,
    highest,
)

# Any constant works: it only has to be the same in every process that places.
PLACEMENT_LOCK_ID = 0x7469636B  # "tick"

_COLUMNS = (
    "instrument_token, tradingsymbol, exchange, segment, account_id, requested_mode, "
    "applied_mode, status, version, task_id, created_at, updated_at, moved_from, "
    "status_reason"
)
_LIVE = tuple(s.value for s in LIVE_STATUSES)


@dataclass(frozen=True)
class Placement:
    """The outcome of a subscribe request.

    `task_needed` is False when the socket already carries, or is about to carry,
    exactly the mode the token's requesters now need, so nothing is sent to the
    worker a second time. `previous_hold` is the requester's own mode before the
    request (None: it held nothing), so that `undo` can put it back.
    """

    subscription: Subscription
    task_needed: bool
    created: bool
    previous: Subscription | None
    client_id: str
    previous_hold: Mode | None


@dataclass(frozen=True)
class Withdrawal:
    """The outcome of one requester leaving a subscription.

    `change` is what the socket must do now: "unsubscribe" when it was the last
    requester, "mode" when the highest mode still asked for differs, None when
    the others need what the socket carries.
    """

    subscription: Subscription
    change: str | None
    previous: Subscription
    client_id: str
    previous_hold: Mode


def place(
    conn: psycopg.Connection[Any],
    instrument: Instrument,
    mode: Mode,
    account_limits: Iterable[tuple[str, int]],
    alive: Callable[[str], bool],
    task_id: str,
    client_id: str = DEFAULT_CLIENT_ID,
    must_hold: bool = False,
) -> Placement:
    """Record that `client_id` wants the token in `mode`; place a token not yet placed.

    The socket's mode is the highest any requester of the token asks for. With
    `must_hold`, only a requester that already holds the token may change it.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (PLACEMENT_LOCK_ID,))
        return _place(cur, instrument, mode, account_limits, alive, lambda _: task_id,
                      client_id, must_hold)


def place_many(
    conn: psycopg.Connection[Any],
    wanted: Sequence[tuple[Instrument, Mode]],
    account_limits: Iterable[tuple[str, int]],
    alive: Callable[[str], bool],
    task_id_for: Callable[[str], str],
    client_id: str = DEFAULT_CLIENT_ID,
) -> list[Placement | TickerError]:
    """Place a batch in one transaction: each item's placement, or why it was refused.

    An item refused for capacity or liveness writes nothing and the rest go on, so
    the answer can say item by item what happened. `task_id_for` names the task
    of each account the batch lands on.
    """
    limits = list(account_limits)
    outcomes: list[Placement | TickerError] = []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (PLACEMENT_LOCK_ID,))
        # Counted once: under the lock only this batch places, and it keeps count.
        used = _used(cur)
        for instrument, mode in wanted:
            try:
                outcomes.append(_place(cur, instrument, mode, limits, alive, task_id_for,
                                       client_id, must_hold=False, used=used))
            except (CapacityExhausted, NoLiveWorker) as exc:
                outcomes.append(exc)
    return outcomes


def _place(
    cur: psycopg.Cursor[Any],
    instrument: Instrument,
    mode: Mode,
    account_limits: Iterable[tuple[str, int]],
    alive: Callable[[str], bool],
    task_id_for: Callable[[str], str],
    client_id: str,
    must_hold: bool,
    used: dict[str, int] | None = None,
) -> Placement:
    # Runs under the placement lock; raises before writing anything of its own.
    # `used`, when given, is the caller's running count of each account's load.
    token = instrument.instrument_token
    cur.execute(
        f"SELECT {_COLUMNS} FROM subscriptions WHERE instrument_token = %s FOR UPDATE",
        (token,),
    )
    row = cur.fetchone()
    previous = _subscription(row) if row else None
    live = previous is not None and previous.status in (Status.PENDING, Status.ACTIVE)
    held = requesters.mode_of(cur, token, client_id) if live else None
    if must_hold and held is None:
        raise (RequesterNotFound if live else SubscriptionNotFound)(
            f"client_id {client_id!r} holds no subscription of instrument_token "
            f"{token}; subscribe with POST /subscriptions"
        )
    if live:
        requesters.hold(cur, token, client_id, mode)
        mode = highest(requesters.modes(cur, token))

    def placed(sub: Subscription, task_needed: bool, created: bool) -> Placement:
        if not live:
            requesters.hold(cur, token, client_id, mode)
        return Placement(sub, task_needed, created, previous, client_id, held)

    if previous and previous.status is not Status.REMOVED:
        # The token keeps its account: its socket already carries it, or will.
        if previous.status is not Status.REMOVING and previous.requested_mode is mode:
            return placed(previous, task_needed=False, created=False)
        # A mode change keeps a live subscription active; a token whose removal
        # is still queued goes back to pending until its subscribe is applied.
        status = Status.ACTIVE if previous.status is Status.ACTIVE else Status.PENDING
        cur.execute(
            f"""UPDATE subscriptions
                SET requested_mode = %s, status = %s, version = version + 1,
                    task_id = %s, updated_at = now()
                WHERE instrument_token = %s RETURNING {_COLUMNS}""",
            (mode.value, status.value, task_id_for(previous.account_id), token),
        )
        return placed(_subscription(cur.fetchone()), task_needed=True, created=False)

    loads = _used(cur) if used is None else used
    account_id = choose_account(
        AccountLoad(account_id, capacity, loads.get(account_id, 0), alive(account_id))
        for account_id, capacity in account_limits
    )
    loads[account_id] = loads.get(account_id, 0) + 1
    cur.execute(
        f"""INSERT INTO subscriptions (instrument_token, tradingsymbol, exchange,
                segment, account_id, requested_mode, status, task_id)
            VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s)
            ON CONFLICT (instrument_token) DO UPDATE SET
                tradingsymbol = EXCLUDED.tradingsymbol,
                exchange = EXCLUDED.exchange, segment = EXCLUDED.segment,
                account_id = EXCLUDED.account_id,
                requested_mode = EXCLUDED.requested_mode, applied_mode = NULL,
                status = 'pending', version = subscriptions.version + 1,
                task_id = EXCLUDED.task_id, created_at = now(), updated_at = now()
            RETURNING {_COLUMNS}""",
        (
            token,
            instrument.tradingsymbol,
            instrument.exchange,
            instrument.segment,
            account_id,
            mode.value,
            task_id_for(account_id),
        ),
    )
    return placed(_subscription(cur.fetchone()), task_needed=True, created=True)


def withdraw(
    conn: psycopg.Connection[Any], instrument_token: int, client_id: str, task_id: str
) -> Withdrawal:
    """Take one requester off a pending or live subscription.

    The last one out marks the subscription for removal by its account's worker;
    otherwise the socket's mode follows the highest still asked for.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""SELECT {_COLUMNS} FROM subscriptions
                WHERE instrument_token = %s AND status IN ('pending', 'active')
                FOR UPDATE""",
            (instrument_token,),
        )
        row = cur.fetchone()
        held = requesters.mode_of(cur, instrument_token, client_id) if row else None
        if row is None or held is None:
            raise (SubscriptionNotFound if row is None else RequesterNotFound)(
                f"instrument_token {instrument_token} has no pending or active "
                f"subscription held by client_id {client_id!r}; list them with "
                "GET /subscriptions"
            )
        previous = _subscription(row)
        requesters.release(cur, instrument_token, client_id)
        remaining = requesters.modes(cur, instrument_token)
        if not remaining:
            cur.execute(
                f"""UPDATE subscriptions
                    SET status = 'removing', version = version + 1, task_id = %s,
                        updated_at = now()
                    WHERE instrument_token = %s RETURNING {_COLUMNS}""",
                (task_id, instrument_token),
            )
            change: str | None = "unsubscribe"
        elif highest(remaining) is not previous.requested_mode:
            cur.execute(
                f"""UPDATE subscriptions
                    SET requested_mode = %s, version = version + 1, task_id = %s,
                        updated_at = now()
                    WHERE instrument_token = %s RETURNING {_COLUMNS}""",
                (highest(remaining).value, task_id, instrument_token),
            )
            change = "mode"
        else:
            return Withdrawal(previous, None, previous, client_id, held)
        return Withdrawal(_subscription(cur.fetchone()), change, previous, client_id, held)


def undo(
    conn: psycopg.Connection[Any],
    placed: Subscription,
    previous: Subscription | None,
    client_id: str,
    previous_hold: Mode | None,
) -> None:
    """Put a row and its requester back as they were when the task that would apply
    the change could not be sent.

    Only the request's own version is undone, so a newer request is never erased.
    """
    with conn.transaction(), conn.cursor() as cur:
        if previous is None:
            # Its requester goes with it (ON DELETE CASCADE).
            cur.execute(
                "DELETE FROM subscriptions WHERE instrument_token = %s AND version = %s",
                (placed.instrument_token, placed.version),
            )
            return
        cur.execute(
            """UPDATE subscriptions
               SET account_id = %s, requested_mode = %s, applied_mode = %s, status = %s,
                   version = %s, task_id = %s, created_at = %s, updated_at = %s
               WHERE instrument_token = %s AND version = %s""",
            (
                previous.account_id,
                previous.requested_mode.value,
                previous.applied_mode.value if previous.applied_mode else None,
                previous.status.value,
                previous.version,
                previous.task_id,
                previous.created_at,
                previous.updated_at,
                placed.instrument_token,
                placed.version,
            ),
        )
        if cur.rowcount:
            requesters.restore(cur, placed.instrument_token, client_id, previous_hold)


def record_applied(
    conn: psycopg.Connection[Any],
    instrument_token: int,
    account_id: str,
    applied_mode: Mode | None,
    version: int | None,
    announce: Callable[[Subscription, Mode | None, Mode | None], dict[str, Any] | None],
) -> Subscription | None:
    """Store what the worker put on its socket, and the event that says so.

    `announce(row, before, after)` builds the event for the change of mode; it goes
    into the outbox in the same transaction. The status moves to active (or removed)
    only when `version` is still the row's latest request, so a stale task never
    overrides a newer request still queued; None settles whatever the row asks for.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""SELECT {_COLUMNS} FROM subscriptions
                WHERE instrument_token = %s AND account_id = %s FOR UPDATE""",
            (instrument_token, account_id),
        )
        row = cur.fetchone()
        if row is None:
            return None
        before = _subscription(row)
        settles = version is None or version == before.version
        status = before.status
        if settles and applied_mode is None and before.status is Status.REMOVING:
            status = Status.REMOVED
        elif settles and applied_mode is not None and before.status is Status.PENDING:
            status = Status.ACTIVE
        cur.execute(
            f"""UPDATE subscriptions SET applied_mode = %s, status = %s, updated_at = now(),
                    moved_from = CASE WHEN %s THEN NULL ELSE moved_from END,
                    status_reason = NULL
                WHERE instrument_token = %s RETURNING {_COLUMNS}""",
            (applied_mode.value if applied_mode else None, status.value,
             applied_mode is not None, instrument_token),
        )
        # The row as applied, but still naming the account it left, for the event.
        after = replace(_subscription(cur.fetchone()), moved_from=before.moved_from)
        event = announce(after, before.applied_mode, applied_mode)
        if event is not None:
            _queue_event(cur, instrument_token, account_id, event)
        return after


def queue_event(conn: psycopg.Connection[Any], subscription: Subscription,
                event: dict[str, Any]) -> None:
    """Queue an event about a subscription outside a change (say, a backfill outcome)."""
    with conn.transaction(), conn.cursor() as cur:
        _queue_event(cur, subscription.instrument_token, subscription.account_id, event)


def _queue_event(cur: psycopg.Cursor[Any], instrument_token: int, account_id: str,
                 event: dict[str, Any]) -> None:
    """Number the event in its token's sequence and put it in the account's outbox.

    The row lock this takes orders a token's events: the numbers and the outbox ids
    of one token rise together, and the outbox is published in id order.
    """
    with cur.connection.cursor() as plain:  # tuples, whatever the caller's rows are
        plain.execute(
            """UPDATE subscriptions SET event_seq = event_seq + 1
               WHERE instrument_token = %s RETURNING event_seq""",
            (instrument_token,),
        )
        row = plain.fetchone()
        assert row is not None, f"no subscription row for token {instrument_token}"
        event["sequence"] = row[0]
        outbox.add(plain, account_id, event)


def mark_refused(
    conn: psycopg.Connection[Any], instrument_token: int, account_id: str, reason: str
) -> Subscription | None:
    """Record that Kite refused a token: it is not streaming, so it waits, pending.

    The worker's reconcile rounds try it again; `reason` says why it waits.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""UPDATE subscriptions SET status = 'pending', applied_mode = NULL,
                    status_reason = %s, updated_at = now()
                WHERE instrument_token = %s AND account_id = %s
                  AND status IN ('pending', 'active')
                RETURNING {_COLUMNS}""",
            (reason, instrument_token, account_id),
        )
        row = cur.fetchone()
    return None if row is None else _subscription(row)


def move_off(
    conn: psycopg.Connection[Any],
    account_id: str,
    account_limits: Iterable[tuple[str, int]],
    placeable: set[str],
    reason: str,
) -> tuple[list[Subscription], list[Subscription]]:
    """Re-place an account's pending and live subscriptions on other accounts.

    Each goes where placement would put a new one; those with no room anywhere stay,
    pending, with `reason`. Returns (moved, stranded).
    """
    limits = list(account_limits)
    moved, stranded = [], []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (PLACEMENT_LOCK_ID,))
        cur.execute(
            f"""SELECT {_COLUMNS} FROM subscriptions
                WHERE account_id = %s AND status IN ('pending', 'active')
                ORDER BY instrument_token FOR UPDATE""",
            (account_id,),
        )
        rows = [_subscription(row) for row in cur.fetchall()]
        used = {aid: 0 for aid, _ in limits} | _used(cur)
        for row in rows:
            try:
                target = choose_account(
                    AccountLoad(aid, capacity, used[aid],
                                aid in placeable and aid != account_id)
                    for aid, capacity in limits
                )
            except (CapacityExhausted, NoLiveWorker) as exc:
                cur.execute(
                    f"""UPDATE subscriptions SET status = 'pending', applied_mode = NULL,
                            status_reason = %s, updated_at = now()
                        WHERE instrument_token = %s RETURNING {_COLUMNS}""",
                    (f"{reason}; {exc}", row.instrument_token),
                )
                stranded.append(_subscription(cur.fetchone()))
                continue
            used[target] += 1
            used[account_id] -= 1
            cur.execute(
                f"""UPDATE subscriptions SET account_id = %s, status = 'pending',
                        applied_mode = NULL, version = version + 1, moved_from = %s,
                        status_reason = NULL, updated_at = now()
                    WHERE instrument_token = %s RETURNING {_COLUMNS}""",
                (target, account_id, row.instrument_token),
            )
            moved.append(_subscription(cur.fetchone()))
    return moved, stranded


def get(conn: psycopg.Connection[Any], instrument_token: int) -> Subscription | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM subscriptions WHERE instrument_token = %s",
            (instrument_token,),
        )
        row = cur.fetchone()
    return _subscription(row) if row else None


def list_subscriptions(
    conn: psycopg.Connection[Any],
    account_id: str | None = None,
    status: Status | None = None,
) -> list[Subscription]:
    """Subscriptions by token; removed ones only when asked for by status."""
    statuses = (status.value,) if status else _LIVE
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""SELECT {_COLUMNS} FROM subscriptions
                WHERE status = ANY(%s) AND (%s::text IS NULL OR account_id = %s)
                ORDER BY instrument_token""",
            (list(statuses), account_id, account_id),
        )
        return [_subscription(row) for row in cur.fetchall()]


def count_by_account_and_status(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], int]:
    """How many subscriptions each account has in each status."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT account_id, status, count(*) FROM subscriptions GROUP BY 1, 2"
        )
        return {(account_id, status): n for account_id, status, n in cur.fetchall()}


def usage_by_account(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Instruments each account's sockets carry or are about to."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT account_id, count(*) FROM subscriptions
               WHERE status = ANY(%s) GROUP BY account_id""",
            (list(_LIVE),),
        )
        return {account_id: used for account_id, used in cur.fetchall()}


def _used(cur: psycopg.Cursor[Any]) -> dict[str, int]:
    """Instruments each account's sockets carry or are about to."""
    cur.execute(
        "SELECT account_id, count(*) AS used FROM subscriptions "
        "WHERE status = ANY(%s) GROUP BY account_id",
        (list(_LIVE),),
    )
    return {row["account_id"]: row["used"] for row in cur.fetchall()}


def _subscription(row: dict[str, Any] | None) -> Subscription:
    assert row is not None
    return Subscription(
        instrument_token=row["instrument_token"],
        tradingsymbol=row["tradingsymbol"],
        exchange=row["exchange"],
        segment=row["segment"],
        account_id=row["account_id"],
        requested_mode=Mode(row["requested_mode"]),
        applied_mode=Mode(row["applied_mode"]) if row["applied_mode"] else None,
        status=Status(row["status"]),
        version=row["version"],
        task_id=row["task_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        moved_from=row["moved_from"],
        status_reason=row["status_reason"],
    )

"""Who holds each subscription: one row per (token, client) with the mode it asked for.

These run inside the caller's transaction, on a cursor whose subscription row the
caller has already locked, so a token's requesters change one request at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import psycopg

from ticker.subscriptions import Mode


def mode_of(cur: psycopg.Cursor[Any], instrument_token: int, client_id: str) -> Mode | None:
    cur.execute(
        """SELECT requested_mode FROM subscription_requesters
           WHERE instrument_token = %s AND client_id = %s""",
        (instrument_token, client_id),
    )
    row = cur.fetchone()
    return None if row is None else Mode(_first(row))


def hold(cur: psycopg.Cursor[Any], instrument_token: int, client_id: str, mode: Mode) -> None:
    cur.execute(
        """INSERT INTO subscription_requesters (instrument_token, client_id, requested_mode)
           VALUES (%s, %s, %s)
           ON CONFLICT (instrument_token, client_id) DO UPDATE
           SET requested_mode = EXCLUDED.requested_mode, updated_at = now()""",
        (instrument_token, client_id, mode.value),
    )


def release(cur: psycopg.Cursor[Any], instrument_token: int, client_id: str) -> bool:
    """Drop one requester; whether it held the token."""
    cur.execute(
        """DELETE FROM subscription_requesters
           WHERE instrument_token = %s AND client_id = %s""",
        (instrument_token, client_id),
    )
    return cur.rowcount > 0


def restore(cur: psycopg.Cursor[Any], instrument_token: int, client_id: str,
            mode: Mode | None) -> None:
    """Put a requester back as it was (None: it held nothing)."""
    if mode is None:
        release(cur, instrument_token, client_id)
    else:
        hold(cur, instrument_token, client_id, mode)


def release_all(cur: psycopg.Cursor[Any], instrument_token: int) -> None:
    cur.execute("DELETE FROM subscription_requesters WHERE instrument_token = %s",
                (instrument_token,))


def modes(cur: psycopg.Cursor[Any], instrument_token: int) -> list[Mode]:
    cur.execute(
        "SELECT requested_mode FROM subscription_requesters WHERE instrument_token = %s",
        (instrument_token,),
    )
    return [Mode(_first(row)) for row in cur.fetchall()]


def by_token(conn: psycopg.Connection[Any], tokens: Iterable[int]
             ) -> dict[int, list[tuple[str, Mode]]]:
    """Each token's requesters, oldest first."""
    found: dict[int, list[tuple[str, Mode]]] = defaultdict(list)
    with conn.cursor() as cur:
        cur.execute(
            """SELECT instrument_token, client_id, requested_mode
               FROM subscription_requesters WHERE instrument_token = ANY(%s)
               ORDER BY created_at, client_id""",
            (list(tokens),),
        )
        for token, client_id, mode in cur.fetchall():
            found[token].append((client_id, Mode(mode)))
    return found


def _first(row: Any) -> Any:
    # Callers' cursors may make dict rows or tuples.
    return next(iter(row.values())) if isinstance(row, dict) else row[0]

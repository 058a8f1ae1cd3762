"""The event outbox: events stored with the change they announce, until published.

Writing an event in the same transaction as its change means a worker killed right
after the change still announces it (on its next start); deleting it only after the
publish means an event can at worst be published twice, never lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# Events published per transaction when a backlog is flushed.
FLUSH_BATCH = 500


def add(cur: psycopg.Cursor[Any], account_id: str, event: dict[str, Any]) -> None:
    """Queue an event inside the caller's transaction."""
    cur.execute(
        "INSERT INTO event_outbox (account_id, payload) VALUES (%s, %s)",
        (account_id, Jsonb(event)),
    )


def flush(conn: psycopg.Connection[Any], account_id: str,
          publish: Callable[[dict[str, Any]], None]) -> int:
    """Publish an account's stored events in order, deleting each batch once sent.

    One flush per account at a time (an advisory lock), so events leave in the
    order they were stored and none twice; a publish that fails leaves its batch
    for the next flush.
    """
    sent = 0
    while True:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('outbox:' || %s))",
                        (account_id,))
            cur.execute(
                """SELECT id, payload FROM event_outbox WHERE account_id = %s
                   ORDER BY id LIMIT %s""",
                (account_id, FLUSH_BATCH),
            )
            rows = cur.fetchall()
            for _, payload in rows:
                publish(payload)
            cur.execute("DELETE FROM event_outbox WHERE id = ANY(%s)",
                        ([row[0] for row in rows],))
        sent += len(rows)
        if len(rows) < FLUSH_BATCH:
            return sent

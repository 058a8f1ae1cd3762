"""Each account worker converges its sockets to PostgreSQL on its own schedule.

The rows here are written straight to the database, as a web process that died
between its write and its task, or a task lost with its worker, would leave them.
"""

from __future__ import annotations

import psycopg
import requests

from tests.e2e.test_subscriptions import (
    EVENT_TIMEOUT_S,
    event_for,
    nfo_tokens,
    subscribe,
    unsubscribe,
)
from tests.e2e.test_workers import socket_subscriptions
from tests.listen import ChannelListener

# Reconcile leaves younger rows to their tasks (RECONCILE_GRACE_S) and runs every
# RECONCILE_EVERY_S; a row made to look older is picked up on the next round.
CONVERGE_TIMEOUT_S = 15.0


def write(stack, sql: str, params: tuple) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(sql, params)


def test_a_pending_row_without_a_task_is_subscribed_and_announced(stack):
    [token] = nfo_tokens(stack, 1, skip=260)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        write(
            stack,
            """INSERT INTO subscriptions (instrument_token, tradingsymbol, exchange,
                   segment, account_id, requested_mode, status, updated_at)
               VALUES (%s, 'ORPHAN', 'NFO', 'NFO-OPT', 'sim-b', 'ltp', 'pending',
                       now() - interval '1 minute')""",
            (token,),
        )

        [created] = events.wait_for(event_for(token, "subscription_created"),
                                    CONVERGE_TIMEOUT_S)

    assert created["metadata"]["account_id"] == "sim-b"
    assert socket_subscriptions(stack, "simkey_b").get(str(token)) == "ltp"
    row = requests.get(f"{stack.api}/subscriptions/{token}", timeout=5).json()
    assert (row["status"], row["applied_mode"]) == ("active", "LTP")
    unsubscribe(stack, token)


def test_a_removal_whose_task_was_lost_is_applied_and_announced(stack):
    [token] = nfo_tokens(stack, 1, skip=261)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        account = subscribe(stack, token, "QUOTE").json()["account_id"]
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
        write(
            stack,
            """UPDATE subscriptions SET status = 'removing', version = version + 1,
                   updated_at = now() - interval '1 minute'
               WHERE instrument_token = %s""",
            (token,),
        )

        events.wait_for(event_for(token, "subscription_removed"), CONVERGE_TIMEOUT_S)

    api_key = {"sim-a": "simkey_a", "sim-b": "simkey_b"}[account]
    assert str(token) not in socket_subscriptions(stack, api_key)
    assert requests.get(f"{stack.api}/subscriptions/{token}", timeout=5).json()[
        "status"] == "removed"

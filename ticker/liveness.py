"""What each account's worker reports about itself in Redis, read by anyone.

A worker holds its account's lease while it runs and writes its sockets' state
every heartbeat. The web reads both to place subscriptions and answer /health; a
worker whose token Kite refused reads them to move its subscriptions elsewhere.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from ticker.accounts import Accounts
from ticker.lease import lease_key

# Kite sends at least a heartbeat a second: a socket this long without a frame is
# reported degraded even before the worker's watchdog drops it.
SILENT_AFTER_S = 2.5


def state_key(key_prefix: str, account_id: str) -> str:
    return f"{key_prefix}account:{account_id}:state"


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


def alive_accounts(client: redis.Redis, key_prefix: str, accounts: Accounts) -> set[str]:
    """Accounts whose worker holds its lease."""
    pipe = client.pipeline(transaction=False)
    for account in accounts:
        pipe.exists(lease_key(key_prefix, account.id))
    return {a.id for a, held in zip(accounts, pipe.execute(), strict=True) if held}


def worker_states(client: redis.Redis, key_prefix: str, accounts: Accounts
                  ) -> dict[str, dict[str, Any]]:
    """The last state each live worker wrote, by account id."""
    ids = accounts.ids
    raw = client.mget([state_key(key_prefix, aid) for aid in ids])
    return {aid: orjson.loads(value) for aid, value in zip(ids, raw, strict=True) if value}


def placeable_accounts(client: redis.Redis, key_prefix: str, accounts: Accounts) -> set[str]:
    """Accounts whose worker runs and whose access token Kite still accepts."""
    states = worker_states(client, key_prefix, accounts)
    return {
        aid
        for aid in alive_accounts(client, key_prefix, accounts)
        if socket_state(states.get(aid, {}).get("connections", [])) != "auth_failed"
    }

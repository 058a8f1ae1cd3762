"""Access tokens rotated while the service runs, kept in Redis beside the leases.

Kite access tokens die daily. `ticker token set` stores the day's new token here
under the service's key prefix; each account's worker checks it every heartbeat and
uses it for its next (re)connect, so neither the accounts file nor the process
environment (which a running worker cannot see change) has to be touched. An
override wins over the accounts file until `ticker token clear` removes it.

Tokens are secrets: nothing here logs or returns one except to its worker.
"""

from __future__ import annotations

import logging
import time

import redis

from ticker.accounts import Account

log = logging.getLogger(__name__)


def access_token_key(key_prefix: str, account_id: str) -> str:
    return f"{key_prefix}account:{account_id}:access_token"


def store_override(
    client: redis.Redis, key_prefix: str, account_id: str, access_token: str
) -> None:
    """Make `access_token` the account's token from its worker's next heartbeat on."""
    client.hset(
        access_token_key(key_prefix, account_id),
        mapping={"access_token": access_token, "set_at": str(time.time())},
    )


def read_override(client: redis.Redis, key_prefix: str, account_id: str) -> str | None:
    raw = client.hget(access_token_key(key_prefix, account_id), "access_token")
    if isinstance(raw, bytes):
        raw = raw.decode()
    return raw or None


def clear_override(client: redis.Redis, key_prefix: str, account_id: str) -> bool:
    """Fall back to the accounts file; whether there was an override to remove."""
    return bool(client.delete(access_token_key(key_prefix, account_id)))


def effective_access_token(
    client: redis.Redis, key_prefix: str, account: Account
) -> str:
    """The token to dial with: the rotated one if any, else the accounts file's.

    Raises ConfigInvalid when neither exists, and redis errors as they come.
    """
    return (
        read_override(client, key_prefix, account.id) or account.resolve_access_token()
    )


def access_token_or_file(client: redis.Redis, key_prefix: str, account: Account) -> str:
    """As `effective_access_token`, but the accounts file's token while Redis is away.

    For REST calls (instruments, history), which must not fail only because the
    rotated token cannot be read: the file's may still be good.
    """
    try:
        override = read_override(client, key_prefix, account.id)
    except redis.RedisError as exc:
        log.warning("rotated token unreadable account=%s: %s; using the accounts file's",
                    account.id, type(exc).__name__)
        override = None
    return override or account.resolve_access_token()

"""An exclusive, expiring claim on one account, held in Redis.

Kite counts connections per api_key, so two workers for one account must never hold
sockets at once. A worker opens its sockets only after taking the lease and keeps
renewing it; a dead worker's lease lapses, so its replacement waits at most one
lease. The web reads the same key to tell whether an account's worker is alive.
"""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

# Renew a lease this owner still holds, or take it back when the key is gone (a
# Redis restarted empty keeps nothing); fail only when another owner holds it.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if not holder then
  return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0
end
return 0
"""
# Release only a lease this owner still holds.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def lease_key(key_prefix: str, account_id: str) -> str:
    return f"{key_prefix}account:{account_id}:lease"


class AccountLease:
    def __init__(self, client: redis.Redis, key: str, owner: str, ttl_s: float) -> None:
        self._client = client
        self._key = key
        self._owner = owner
        self._ttl_ms = int(ttl_s * 1000)

    def acquire(self, poll_s: float = 0.5, log_every_s: float = 10.0) -> None:
        """Block until this owner holds the lease."""
        last_log = 0.0
        while not self._client.set(self._key, self._owner, nx=True, px=self._ttl_ms):
            holder = self._client.get(self._key)
            if time.monotonic() - last_log > log_every_s:
                log.warning("lease held by another worker key=%s holder=%s; waiting",
                            self._key, holder.decode() if holder else None)
                last_log = time.monotonic()
            time.sleep(poll_s)
        log.info("lease taken key=%s owner=%s", self._key, self._owner)

    def renew(self) -> bool:
        """Extend the lease (retaking a vanished one); False when another worker holds it."""
        return bool(self._client.eval(_RENEW, 1, self._key, self._owner, self._ttl_ms))

    def release(self) -> None:
        self._client.eval(_RELEASE, 1, self._key, self._owner)


def is_held(client: redis.Redis, key: str) -> bool:
    return bool(client.exists(key))

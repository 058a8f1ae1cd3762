"""Which backfill workers run, and when beat's gap fill last ran, as kept in Redis.

An account worker holds its account's lease; backfill workers have no account and
any number may run, so each keeps its own entry fresh in one sorted set, scored
by the moment it lapses. /health counts the fresh entries: a backfill worker that
died without a word drops out within one lapse.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import redis


def workers_key(key_prefix: str) -> str:
    return f"{key_prefix}backfill:workers"


def gap_fill_key(key_prefix: str) -> str:
    return f"{key_prefix}backfill:last-gap-fill"


def announce(client: redis.Redis, key_prefix: str, worker: str, lapse_s: float,
             now: Callable[[], float] = time.time) -> None:
    """Say `worker` runs for the next `lapse_s` seconds."""
    client.zadd(workers_key(key_prefix), {worker: now() + lapse_s})


def withdraw(client: redis.Redis, key_prefix: str, worker: str) -> None:
    client.zrem(workers_key(key_prefix), worker)


def running(client: redis.Redis, key_prefix: str,
            now: Callable[[], float] = time.time) -> list[str]:
    """The backfill workers whose entry has not lapsed, by name."""
    key = workers_key(key_prefix)
    pipe = client.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", now())
    pipe.zrange(key, 0, -1)
    _, names = pipe.execute()
    return sorted(name.decode() for name in names)


def record_gap_fill(client: redis.Redis, key_prefix: str, queued: int,
                    now: Callable[[], float] = time.time) -> None:
    client.set(gap_fill_key(key_prefix), orjson.dumps({"at": now(), "queued": queued}))


def last_gap_fill(client: redis.Redis, key_prefix: str) -> dict[str, Any] | None:
    """When beat's gap fill last ran and how many backfills it queued, or None."""
    raw = client.get(gap_fill_key(key_prefix))
    return None if raw is None else dict(orjson.loads(raw))

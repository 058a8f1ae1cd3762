"""A task base under which each attempt of a task runs at most once.

With late acks on the Redis broker, a message left unacknowledged longer than the
visibility timeout (its worker frozen, or busy with a long task) is handed out
again while the first delivery still stands. Each attempt (task id and retry
number) therefore claims a marker before it runs and marks it finished after,
however it ended; a second delivery of the same attempt finds the marker and is
acknowledged without running. A retry is a new attempt and runs. A claim whose
worker was killed lapses after CLAIM_TTL_S, long before the broker's visibility
timeout brings that message back, so a killed worker's task is not lost.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import redis
from celery import Task

from ticker.config import Settings

log = logging.getLogger(__name__)

# Longer than any one attempt runs; shorter than the broker's visibility timeout.
CLAIM_TTL_S = 600
# Long past any visibility timeout that could bring the same message back.
FINISHED_TTL_S = 24 * 3600


@cache
def _markers() -> tuple[redis.Redis, str]:
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    return client, f"{settings.key_prefix}task-attempt:"


class RunsOnce(Task):  # type: ignore[misc]
    """Skips a second delivery of an attempt that ran or is running."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        if task_id is None:  # called directly, not through a worker
            return super().__call__(*args, **kwargs)
        attempt = f"{task_id}:{self.request.retries or 0}"
        if not _claim(attempt):
            log.warning("duplicate delivery skipped task=%s name=%s attempt=%s",
                        task_id, self.name, attempt)
            return None
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _finish(attempt)


def _claim(attempt: str) -> bool:
    client, prefix = _markers()
    try:
        return bool(client.set(prefix + attempt, "running", nx=True, ex=CLAIM_TTL_S))
    except redis.RedisError as exc:
        # Every task is idempotent: running it again is the safe way to be wrong.
        log.warning("attempt marker unreadable attempt=%s: %s; running it", attempt, exc)
        return True


def _finish(attempt: str) -> None:
    client, prefix = _markers()
    try:
        client.set(prefix + attempt, "finished", ex=FINISHED_TTL_S)
    except redis.RedisError as exc:
        log.warning("attempt marker not written attempt=%s: %s", attempt, exc)

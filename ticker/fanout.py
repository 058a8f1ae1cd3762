"""From received frames to tick messages on Redis, off the socket's thread.

The reactor thread only drops each binary frame into a bounded queue, so a slow or
absent Redis never stalls the sockets (a stalled reactor misses Kite's frames and gets
cut). A publisher thread decodes the frames and publishes their ticks, one JSON
message per tick, frames drained together and sent in pipelined round trips. When the queue
is full, new frames are dropped and counted rather than queued without bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import orjson
import redis

from ticker.errors import MalformedFrame
from ticker.ticks import parse_frame

log = logging.getLogger(__name__)

# Most frames taken from the backlog at once.
MAX_FRAMES_PER_BATCH = 256
# Ticks sent per pipeline round trip: enough to amortise it, few enough that a
# drained backlog is not held in memory whole before anything goes out.
TICKS_PER_ROUND_TRIP = 2000
# After a failed publish, wait this long before taking the next batch.
PUBLISH_RETRY_PAUSE_S = 0.5

_STOP = object()


@dataclass(frozen=True)
class FanoutStats:
    frames_received: int
    frames_dropped: int
    ticks_published: int
    publish_failures: int
    backlog: int


class TickFanout:
    """Publishes the ticks of queued frames on one Redis channel."""

    def __init__(
        self, client: redis.Redis, channel: str, account_id: str, max_backlog: int
    ) -> None:
        self._client = client
        self._channel = channel
        self._account_id = account_id
        self._frames: queue.Queue[object] = queue.Queue(maxsize=max_backlog)
        self._thread = threading.Thread(
            target=self._run, name=f"tick-fanout-{account_id}", daemon=True
        )
        self._received = 0
        self._dropped = 0
        self._published = 0
        self._failures = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued, then end the publisher thread."""
        if not self._thread.is_alive():
            return
        try:
            self._frames.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("fanout stopping with a full backlog account=%s", self._account_id)
        self._thread.join(timeout_s)

    def submit(self, frame: bytes) -> None:
        """Queue one frame; never blocks the caller (the socket's thread)."""
        self._received += 1
        try:
            self._frames.put_nowait(frame)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.error("tick backlog full, frames dropped account=%s dropped=%d",
                          self._account_id, self._dropped)

    def stats(self) -> FanoutStats:
        return FanoutStats(
            frames_received=self._received,
            frames_dropped=self._dropped,
            ticks_published=self._published,
            publish_failures=self._failures,
            backlog=self._frames.qsize(),
        )

    def _run(self) -> None:
        while True:
            batch = [self._frames.get()]
            while len(batch) < MAX_FRAMES_PER_BATCH:
                try:
                    batch.append(self._frames.get_nowait())
                except queue.Empty:
                    break
            stopping = batch[-1] is _STOP
            frames = [f for f in batch if f is not _STOP]
            if frames:
                self._publish(frames)  # type: ignore[arg-type]
            if stopping:
                return

    def _publish(self, frames: list[bytes]) -> None:
        pipe = self._client.pipeline(transaction=False)
        pending = 0
        try:
            for frame in frames:
                try:
                    ticks = parse_frame(frame)
                except MalformedFrame as exc:
                    log.error("frame skipped account=%s bytes=%d: %s",
                              self._account_id, len(frame), exc)
                    continue
                for tick in ticks:
                    pipe.publish(self._channel, orjson.dumps(tick))
                pending += len(ticks)
                if pending >= TICKS_PER_ROUND_TRIP:
                    pipe.execute()
                    self._published += pending
                    pending = 0
            if pending:
                pipe.execute()
                self._published += pending
        except redis.RedisError as exc:
            self._failures += 1
            log.error("tick publish failed account=%s ticks=%d: %s",
                      self._account_id, pending, exc)
            time.sleep(PUBLISH_RETRY_PAUSE_S)

"""From received frames to tick messages on Redis, off the socket's thread.

The reactor thread only drops each binary frame into a bounded queue, so a slow or
absent Redis never stalls the sockets (a stalled reactor misses Kite's frames and gets
cut). A publisher thread writes each tick of the queued frames as its JSON message
(`tick_messages`) and publishes them, one message per tick, frames drained together
and sent in one script call per batch. When the queue is full, new frames are dropped
and counted rather than queued without bound.

The same call leaves the ticks' last prices in one Redis hash, so the web's status
page can show a price and a tick age without listening to the ticks channel.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from ticker.errors import MalformedFrame
from ticker.tick_messages import write_frame

log = logging.getLogger(__name__)

# Most frames taken from the backlog at once.
MAX_FRAMES_PER_BATCH = 256
# Ticks sent per pipeline round trip: enough to amortise it, few enough that a
# drained backlog is not held in memory whole before anything goes out.
TICKS_PER_ROUND_TRIP = 2000
# One script call publishes a batch's messages and records their last prices: one
# command on the wire instead of one a tick, and Redis loops over them in C-speed
# Lua, not the client in Python. ARGV: the message count, the messages, then
# token/price pairs for the hash (KEYS[2], when given), written 500 pairs at a time.
FAN_OUT_SCRIPT = """
local count = tonumber(ARGV[1])
for i = 2, count + 1 do
  redis.call('PUBLISH', KEYS[1], ARGV[i])
end
if KEYS[2] then
  local i = count + 2
  while i <= #ARGV do
    local last = math.min(i + 999, #ARGV)
    redis.call('HSET', KEYS[2], unpack(ARGV, i, last))
    i = last + 1
  end
end
return count
"""
# After a failed publish, wait this long before taking the next batch.
PUBLISH_RETRY_PAUSE_S = 0.5

_STOP = object()


def last_prices_key(key_prefix: str) -> str:
    """The hash of token -> `[last_price, received_at]`, shared by every account."""
    return f"{key_prefix}last-prices"


@dataclass(frozen=True)
class LastPrice:
    price: float
    received_at: float  # epoch seconds, when the publisher handled the tick's frame


def read_last_prices(client: redis.Redis, key: str, tokens: Iterable[int]
                     ) -> dict[int, LastPrice]:
    """The last price seen for each of `tokens` that has ticked; one HMGET."""
    wanted = list(tokens)
    if not wanted:
        return {}
    found: dict[int, LastPrice] = {}
    for token, raw in zip(wanted, client.hmget(key, wanted), strict=True):
        if raw is not None:
            price, received_at = orjson.loads(raw)
            found[token] = LastPrice(float(price), float(received_at))
    return found


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
        self, client: redis.Redis, channel: str, account_id: str, max_backlog: int,
        last_prices_key: str | None = None,
    ) -> None:
        self._client = client
        # Loaded by its digest on first use, and again after Redis restarts empty.
        self._fan_out = client.register_script(FAN_OUT_SCRIPT)
        self._channel = channel
        # None keeps no last prices (tests of the publisher alone).
        self._last_prices_key = last_prices_key
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
        messages: list[bytes] = []
        prices: dict[int, bytes] = {}
        # One clock read per batch: frames drained together arrived within moments.
        received_at = b"%.3f" % time.time()
        try:
            for frame in frames:
                try:
                    written = write_frame(frame)
                except MalformedFrame as exc:
                    log.error("frame skipped account=%s bytes=%d: %s",
                              self._account_id, len(frame), exc)
                    continue
                for token, last_price, message in written:
                    messages.append(message)
                    prices[token] = b"[%r,%s]" % (last_price, received_at)
                if len(messages) >= TICKS_PER_ROUND_TRIP:
                    self._send(messages, prices)
                    messages, prices = [], {}
            if messages:
                self._send(messages, prices)
        except redis.RedisError as exc:
            self._failures += 1
            log.error("tick publish failed account=%s ticks=%d: %s",
                      self._account_id, len(messages), exc)
            time.sleep(PUBLISH_RETRY_PAUSE_S)

    def _send(self, messages: list[bytes], prices: dict[int, bytes]) -> None:
        """Publish one message per tick, and note the last prices, in one round trip."""
        keys = [self._channel]
        args: list[Any] = [len(messages), *messages]
        if self._last_prices_key is not None:
            keys.append(self._last_prices_key)
            for token, price in prices.items():
                args += (token, price)
        self._fan_out(keys=keys, args=args)
        self._published += len(messages)

"""The last-price hash the tick publisher keeps for the status page, on real Redis."""

from __future__ import annotations

import struct
import time
import uuid

from ticker.fanout import TickFanout, last_prices_key, read_last_prices

NFO_TOKEN = 13660418  # segment 2 (NFO): prices are in paise
OTHER_TOKEN = 13660674


def ltp_frame(*ticks: tuple[int, int]) -> bytes:
    """One binary frame of LTP packets (token, price in paise), as Kite sends it."""
    packets = [struct.pack(">HII", 8, token, paise) for token, paise in ticks]
    return struct.pack(">H", len(packets)) + b"".join(packets)


def published(fanout: TickFanout, ticks: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while fanout.stats().ticks_published < ticks and time.monotonic() < deadline:
        time.sleep(0.01)


def test_each_frame_leaves_its_tokens_last_price_and_when_it_came(redis_client):
    key = last_prices_key(f"test:{uuid.uuid4().hex}:")
    fanout = TickFanout(redis_client, f"ticks-{uuid.uuid4().hex}", "sim-a", 10,
                        last_prices_key=key)
    fanout.start()
    before = time.time()

    fanout.submit(ltp_frame((NFO_TOKEN, 12345), (OTHER_TOKEN, 500)))
    fanout.submit(ltp_frame((NFO_TOKEN, 12400)))
    published(fanout, 3)
    fanout.stop()
    prices = read_last_prices(redis_client, key, [NFO_TOKEN, OTHER_TOKEN, 1])

    assert prices[NFO_TOKEN].price == 124.0
    assert prices[OTHER_TOKEN].price == 5.0
    assert 1 not in prices
    assert before - 0.01 <= prices[NFO_TOKEN].received_at <= time.time()
    redis_client.delete(key)


def test_without_a_key_the_publisher_keeps_no_prices(redis_client):
    prefix = f"test:{uuid.uuid4().hex}:"
    fanout = TickFanout(redis_client, f"ticks-{uuid.uuid4().hex}", "sim-a", 10)
    fanout.start()

    fanout.submit(ltp_frame((NFO_TOKEN, 12345)))
    published(fanout, 1)
    fanout.stop()

    assert fanout.stats().ticks_published == 1
    assert redis_client.exists(last_prices_key(prefix)) == 0

"""Run inside the services namespace: subscribe through the API, watch Redis.

`python -m tests.e2e.across_probe` prints one JSON summary on stdout: the API's
answer, the events and ticks Redis carried for the token, and the account worker's
own /metrics as scraped across the veth. The test outside the namespaces reads it.
"""

from __future__ import annotations

import os
import sys
import time

import orjson
import requests

from tests.listen import ChannelListener
from ticker.config import Settings

HEALTH_TIMEOUT_S = 90.0
EVENT_TIMEOUT_S = 20.0
TICKS_WANTED = 3


def wait_healthy(api: str) -> dict:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last: object = None
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{api}/health", timeout=2)
            last = answer.json()
            if answer.status_code == 200:
                return last
        except (requests.RequestException, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise SystemExit(f"API not healthy within {HEALTH_TIMEOUT_S:.0f}s: {last}")


def main() -> None:
    api, worker_metrics, token = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = Settings()
    health = wait_healthy(api)
    with (
        ChannelListener(settings.redis_url, settings.events_channel) as events,
        ChannelListener(settings.redis_url, settings.ticks_channel) as ticks,
    ):
        answer = requests.post(
            f"{api}/subscriptions",
            json={"instrument_token": token, "requested_mode": "FULL"},
            headers={"X-API-Key": os.environ["TICKER_API_KEY"]},
            timeout=10,
        )
        created = events.wait_for(
            lambda m: (
                m["instrument_token"] == token
                and m["event_type"] == "subscription_created"
            ),
            EVENT_TIMEOUT_S,
        )
        streamed = ticks.wait_for(
            lambda m: m["instrument_token"] == token,
            EVENT_TIMEOUT_S,
            count=TICKS_WANTED,
        )
    metrics = requests.get(worker_metrics, timeout=5)
    summary = {
        "health": health,
        "status_code": answer.status_code,
        "subscription": answer.json(),
        "created": created[0],
        "ticks": streamed,
        "worker_metrics_status": metrics.status_code,
        "worker_metrics": metrics.text,
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main()

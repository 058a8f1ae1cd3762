"""/metrics during a run: Prometheus series for subscriptions, workers and ticks."""

from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_subscriptions import (  # noqa: F401 (cleanup is a fixture)
    EVENT_TIMEOUT_S,
    cleanup,
    event_for,
    nfo_tokens,
    subscribe,
)
from tests.listen import ChannelListener

ACCOUNTS = ("sim-a", "sim-b")


def scrape(stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = requests.get(f"{stack.api}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_follow_a_subscription_and_its_ticks(stack, cleanup):
    [token] = nfo_tokens(stack, 1, skip=700)
    cleanup.append(token)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        account = subscribe(stack, token, "FULL").json()["account_id"]
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
    first = scrape(stack)
    time.sleep(3 * stack.tick_interval_s + 2.5)  # ticks flow; workers report every 2 s
    second = scrape(stack)

    for name in ACCOUNTS:
        assert value(first, "ticker_account_capacity_instruments", account=name) == 9000
        assert value(first, "ticker_worker_up", account=name) == 1
        assert value(first, "ticker_connection_open", account=name, connection="0") == 1
    assert value(first, "ticker_dependency_up", dependency="database") == 1
    assert value(first, "ticker_dependency_up", dependency="redis") == 1
    assert value(first, "ticker_subscriptions", account=account, status="active") >= 1
    assert value(first, "ticker_account_instruments_used", account=account) >= 1
    published = "ticker_ticks_published_total"
    assert value(second, published, account=account) > value(first, published, account=account)
    assert value(second, "ticker_frames_dropped_total", account=account) == 0
    assert value(second, "ticker_connection_last_frame_age_seconds",
                 account=account, connection="0") < 5

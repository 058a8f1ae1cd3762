"""/metrics during a run: Prometheus series for subscriptions, workers and ticks."""

from __future__ import annotations

import re
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
    assert value(first, "ticker_backfill_workers") == 1
    assert value(first, "ticker_subscriptions", account=account, status="active") >= 1
    assert value(first, "ticker_account_instruments_used", account=account) >= 1
    published = "ticker_ticks_published_total"
    assert value(second, published, account=account) > value(first, published, account=account)
    assert value(second, "ticker_frames_dropped_total", account=account) == 0
    assert value(second, "ticker_connection_last_frame_age_seconds",
                 account=account, connection="0") < 5


WORKER_METRICS_LINE = re.compile(r"runner: worker metrics (?P<urls>.+)$")


def worker_metrics_urls(stack) -> dict[str, str]:
    """Process name -> its /metrics URL, as the runner announced them."""
    match = stack.process.wait_for_line(WORKER_METRICS_LINE, 5)
    return dict(part.split("=", 1) for part in match["urls"].split())


def scrape_url(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_each_worker_serves_its_own_metrics_on_a_port_of_its_own(stack, cleanup):
    urls = worker_metrics_urls(stack)
    [token] = nfo_tokens(stack, 1, skip=720)
    cleanup.append(token)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        account = subscribe(stack, token, "FULL").json()["account_id"]
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
        events.wait_for(event_for(token, "backfill_completed"), 30)
    first = scrape_url(urls[f"worker-{account}"])
    time.sleep(3 * stack.tick_interval_s)
    second = scrape_url(urls[f"worker-{account}"])
    backfill = scrape_url(urls["backfill-worker"])

    assert set(urls) == {"worker-sim-a", "worker-sim-b", "backfill-worker"}
    assert len({url.rsplit(":", 1)[1] for url in urls.values()}) == 3
    for name in ACCOUNTS:
        other = scrape_url(urls[f"worker-{name}"])
        assert value(other, "ticker_worker_connection_open", account=name, connection="0") == 1
        assert ("ticker_worker_ticks_published_total", (("account", name),)) in other
    published = "ticker_worker_ticks_published_total"
    assert value(second, published, account=account) > value(first, published, account=account)
    assert value(second, "ticker_worker_frames_received_total", account=account) > 0
    assert value(second, "ticker_worker_frames_dropped_total", account=account) == 0
    assert value(second, "ticker_worker_tick_backlog_frames", account=account) >= 0
    assert value(second, "ticker_worker_connection_last_frame_age_seconds",
                 account=account, connection="0") < 5
    assert value(second, "ticker_worker_connection_reconnects_total",
                 account=account, connection="0") >= 0
    assert value(second, "ticker_worker_task_duration_seconds_count",
                 task="ticker.subscribe") >= 1
    assert value(backfill, "ticker_worker_task_duration_seconds_count",
                 task="ticker.backfill") >= 1
    assert value(backfill, "ticker_backfill_historical_requests_total", code="200") >= 1
    # Socket series are the account workers' alone.
    assert not any(name.startswith("ticker_worker_connection") for name, _ in backfill)

"""Worker metrics: a port of its own for each worker, series from its live state."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ticker.accounts import Account
from ticker.config import Settings
from ticker.worker_metrics import AccountWorkerCollector, worker_metrics_port

ACCOUNTS = [
    Account(id="a", api_key="ka", access_token="ta"),
    Account(id="b", api_key="kb", access_token="tb"),
]


def test_each_worker_of_a_host_gets_a_port_of_its_own_from_one_base():
    settings = Settings(worker_metrics_port=9200)

    ports = [
        worker_metrics_port(settings, ACCOUNTS, account) for account in (None, "a", "b")
    ]

    assert ports == [9200, 9201, 9202]


def test_port_zero_serves_no_metrics():
    assert worker_metrics_port(Settings(worker_metrics_port=0), ACCOUNTS, "a") is None


def test_an_account_workers_state_becomes_prometheus_series():
    state = {
        "account_id": "a",
        "ticks_published": 40,
        "frames_received": 12,
        "frames_dropped": 0,
        "publish_failures": 1,
        "backlog": 3,
        "connections": [
            {
                "index": 0,
                "open": True,
                "tokens": 5,
                "last_frame_age_s": 0.4,
                "reconnects": 2,
                "refusals": 0,
            }
        ],
    }
    registry = CollectorRegistry()
    registry.register(AccountWorkerCollector(lambda: state))

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }

    account = (("account", "a"),)
    connection = (("account", "a"), ("connection", "0"))
    assert samples[("ticker_worker_ticks_published_total", account)] == 40
    assert samples[("ticker_worker_publish_failures_total", account)] == 1
    assert samples[("ticker_worker_tick_backlog_frames", account)] == 3
    assert samples[("ticker_worker_connection_open", connection)] == 1
    assert samples[("ticker_worker_connection_instruments", connection)] == 5
    assert (
        samples[("ticker_worker_connection_last_frame_age_seconds", connection)] == 0.4
    )
    assert samples[("ticker_worker_connection_reconnects_total", connection)] == 2


def test_a_worker_not_started_yet_reports_no_series():
    registry = CollectorRegistry()
    registry.register(AccountWorkerCollector(lambda: None))

    assert b"ticker_worker" not in generate_latest(registry)

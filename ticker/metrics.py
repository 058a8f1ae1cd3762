"""Prometheus series for the whole service, read from where its state lives.

The web process answers /metrics from PostgreSQL (subscriptions) and Redis (what
each account worker last reported, the broker's queues) at scrape time, so every
gunicorn process gives the same answer and a worker on another host is counted
too. Counters are the workers' own totals since they started; Prometheus' rate()
handles the reset a restart brings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ticker.service import MetricsSnapshot
from ticker.subscriptions import Status

# Statuses that hold a place on an account's sockets.
_PLACED = (Status.PENDING.value, Status.ACTIVE.value, Status.REMOVING.value)
# Worker totals exported as counters, named after their state key: (key, help).
_WORKER_COUNTERS = (
    ("ticks_published", "Tick messages published on Redis."),
    ("frames_received", "Binary frames received from Kite."),
    ("frames_dropped", "Frames dropped because the publish backlog was full."),
    ("publish_failures", "Tick publishes Redis refused."),
)


class ServiceCollector(Collector):  # type: ignore[misc]
    """Builds every series afresh from one snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        up = GaugeMetricFamily("ticker_dependency_up",
                               "Whether the service reached a dependency at scrape.",
                               labels=["dependency"])
        up.add_metric(["database"], snapshot.counts is not None)
        up.add_metric(["redis"], snapshot.worker_states is not None)
        yield up
        yield from _capacity(snapshot)
        if snapshot.counts is not None:
            yield from _subscriptions(snapshot)
        if snapshot.worker_states is not None and snapshot.alive is not None:
            yield from _workers(snapshot)
        if snapshot.backfill_workers is not None:
            yield GaugeMetricFamily("ticker_backfill_workers",
                                    "Backfill workers whose presence is fresh.",
                                    value=snapshot.backfill_workers)
        queued = GaugeMetricFamily("ticker_account_queue_messages",
                                   "Tasks waiting in an account's broker queue.",
                                   labels=["account"])
        for account_id, waiting in snapshot.queue_backlogs.items():
            queued.add_metric([account_id], waiting)
        yield queued


def _capacity(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    capacity = GaugeMetricFamily("ticker_account_capacity_instruments",
                                 "Instruments an account's sockets may carry.",
                                 labels=["account"])
    for account in snapshot.accounts:
        capacity.add_metric([account.id], account.capacity)
    yield capacity


def _subscriptions(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    assert snapshot.counts is not None
    by_status = GaugeMetricFamily("ticker_subscriptions",
                                  "Subscriptions by account and status.",
                                  labels=["account", "status"])
    used = GaugeMetricFamily("ticker_account_instruments_used",
                             "Instruments placed on an account (pending, active, removing).",
                             labels=["account"])
    for account in snapshot.accounts:
        for status in Status:
            by_status.add_metric([account.id, status.value],
                                 snapshot.counts.get((account.id, status.value), 0))
        used.add_metric([account.id],
                        sum(snapshot.counts.get((account.id, s), 0) for s in _PLACED))
    yield by_status
    yield used


def _workers(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    assert snapshot.worker_states is not None and snapshot.alive is not None
    worker_up = GaugeMetricFamily("ticker_worker_up",
                                  "Whether an account's worker holds its lease.",
                                  labels=["account"])
    for account in snapshot.accounts:
        worker_up.add_metric([account.id], account.id in snapshot.alive)
    yield worker_up
    states = [snapshot.worker_states[a.id] for a in snapshot.accounts
              if a.id in snapshot.worker_states]
    yield from worker_series(states, "ticker_")


def worker_series(states: list[dict[str, Any]], prefix: str) -> Iterator[Metric]:
    """The series of account workers' reported states, each name under `prefix`.

    The web reads every worker's state from Redis (`ticker_`); a worker's own port
    serves its live state (`ticker_worker_`), so the two never sum one figure twice.
    """
    backlog = GaugeMetricFamily(f"{prefix}tick_backlog_frames",
                                "Frames waiting between a worker's sockets and Redis.",
                                labels=["account"])
    counters = {key: CounterMetricFamily(f"{prefix}{key}", text, labels=["account"])
                for key, text in _WORKER_COUNTERS}
    per_connection = ["account", "connection"]
    connection_open = GaugeMetricFamily(f"{prefix}connection_open",
                                        "Whether a Kite connection is open.",
                                        labels=per_connection)
    instruments = GaugeMetricFamily(f"{prefix}connection_instruments",
                                    "Instruments on a Kite connection.",
                                    labels=per_connection)
    frame_age = GaugeMetricFamily(f"{prefix}connection_last_frame_age_seconds",
                                  "Seconds since a connection's last frame.",
                                  labels=per_connection)
    reconnects = CounterMetricFamily(f"{prefix}connection_reconnects",
                                     "Reconnect attempts after a connection was lost.",
                                     labels=per_connection)
    refusals = CounterMetricFamily(f"{prefix}subscribe_refusals",
                                   "Subscribes Kite answered with an error text frame.",
                                   labels=per_connection)
    for state in states:
        account_id = state["account_id"]
        backlog.add_metric([account_id], state.get("backlog", 0))
        for key, family in counters.items():
            family.add_metric([account_id], state.get(key, 0))
        for connection in state.get("connections", []):
            labels = [account_id, str(connection["index"])]
            connection_open.add_metric(labels, bool(connection.get("open")))
            instruments.add_metric(labels, connection.get("tokens", 0))
            if connection.get("last_frame_age_s") is not None:
                frame_age.add_metric(labels, connection["last_frame_age_s"])
            reconnects.add_metric(labels, connection.get("reconnects", 0))
            refusals.add_metric(labels, connection.get("refusals", 0))
    yield backlog
    yield from counters.values()
    yield from (connection_open, instruments, frame_age, reconnects, refusals)

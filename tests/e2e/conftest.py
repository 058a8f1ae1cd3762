"""One `ticker run` stack shared by the end-to-end tests of a session."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.conftest import free_port
from tests.stack import Stack, running_stack

# Faster than Kite's ~1 s so gaps and stops show within a short test.
TICK_INTERVAL_S = 0.5
# Short, so tests see a worker converge on its own within seconds.
RECONCILE_EVERY_S = 2
# The backfill worker's port, then one an account (two configured, room to spare).
WORKER_METRICS_PORTS = 4


def free_port_block(count: int) -> int:
    """The first of `count` consecutive ports free on loopback right now."""
    while True:
        first = free_port()
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


@pytest.fixture(scope="session")
def stack(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        run_id,
        tmp_path_factory.mktemp("stack"),
        TICKER_SIM_TICK_INTERVAL_S=str(TICK_INTERVAL_S),
        TICKER_WORKER_RECONCILE_S=str(RECONCILE_EVERY_S),
        # The backfill worker and each account's worker serve their own /metrics.
        TICKER_WORKER_METRICS_PORT=str(free_port_block(WORKER_METRICS_PORTS)),
    ) as running:
        yield running

"""One `ticker run` stack shared by the end-to-end tests of a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack import Stack, running_stack

# Faster than Kite's ~1 s so gaps and stops show within a short test.
TICK_INTERVAL_S = 0.5
# Short, so tests see a worker converge on its own within seconds.
RECONCILE_EVERY_S = 2


@pytest.fixture(scope="session")
def stack(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        run_id,
        tmp_path_factory.mktemp("stack"),
        TICKER_SIM_TICK_INTERVAL_S=str(TICK_INTERVAL_S),
        TICKER_WORKER_RECONCILE_S=str(RECONCILE_EVERY_S),
    ) as running:
        yield running

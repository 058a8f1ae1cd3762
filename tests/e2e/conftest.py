"""One `ticker run` stack shared by the end-to-end tests of a session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stack import TICKER, UP_LINE, UP_TIMEOUT_S, RunningStack, isolated_stack_env

# Faster than Kite's ~1 s so gaps and stops show within a short test.
TICK_INTERVAL_S = 0.5
# Short, so tests see a worker converge on its own within seconds.
RECONCILE_EVERY_S = 2


@dataclass
class Stack:
    process: RunningStack
    env: dict[str, str]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['TICKER_WEB_PORT']}"

    @property
    def flower(self) -> str:
        return f"http://127.0.0.1:{self.env['TICKER_FLOWER_PORT']}"

    @property
    def sim_rest(self) -> str:
        return self.env["TICKER_KITE_REST_ROOT"]

    @property
    def redis_url(self) -> str:
        return self.env["REDIS_URL"]

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    @property
    def events_channel(self) -> str:
        return self.env["TICKER_EVENTS_CHANNEL"]

    @property
    def ticks_channel(self) -> str:
        return self.env["TICKER_TICKS_CHANNEL"]

    @property
    def tick_interval_s(self) -> float:
        return float(self.env["TICKER_SIM_TICK_INTERVAL_S"])


@pytest.fixture(scope="session")
def stack(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with isolated_stack_env(
        run_id,
        TICKER_SIM_TICK_INTERVAL_S=str(TICK_INTERVAL_S),
        TICKER_WORKER_RECONCILE_S=str(RECONCILE_EVERY_S),
    ) as env:
        workdir: Path = tmp_path_factory.mktemp("stack")
        running = RunningStack([TICKER, "run"], env, workdir)
        try:
            running.wait_for_line(UP_LINE, UP_TIMEOUT_S)
            yield Stack(running, env)
            running.interrupt()
        finally:
            running.kill_everything()

"""A whole `ticker run` stack for tests: isolated, watched, and always torn down.

`isolated_stack_env` gives a stack free ports, a fresh database, an empty Redis db and
names of its own; `RunningStack` runs the real command in its own process group and
records every process below it, so a test can tell that nothing was left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import sql

from tests.conftest import (
    ADMIN_DATABASE_URL,
    TEST_REDIS_URL,
    claim_redis_db,
    drop_database,
    free_port,
    release_redis_db,
)

TICKER = str(Path(sys.executable).parent / "ticker")
UP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
UP_LINE = re.compile(r"stack up: api=http://\S+ flower=http://\S+")


class RunningStack:
    """A `ticker run` process, its output, and every process seen below it."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.descendants: dict[tuple[int, float], str] = {}
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read_output, daemon=True),
            threading.Thread(target=self._watch_descendants, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def wait_for_line(
        self, pattern: re.Pattern[str], timeout_s: float
    ) -> re.Match[str]:
        """The first output line matching `pattern`, waiting for it to appear."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines:
                    match = pattern.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    pytest.fail(
                        f"no line matching {pattern.pattern!r} "
                        f"(runner exit={self.process.poll()}); output:\n{self.tail()}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it, then the runner's exit code."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"runner still running {STOP_TIMEOUT_S:.0f}s after SIGINT; "
                f"output:\n{self.tail()}"
            )

    def survivors(self) -> list[str]:
        """Processes seen below the runner that still run, after a short grace."""
        deadline = time.monotonic() + 2.0
        while True:
            alive = [
                f"pid={pid} {cmdline}"
                for (pid, started), cmdline in self.descendants.items()
                if _still_running(pid, started)
            ]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def kill_everything(self) -> None:
        """Last-resort cleanup, so a failed test leaves nothing running."""
        for pid, started in list(self.descendants):
            if _still_running(pid, started):
                _kill_quietly(pid)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, count: int = 80) -> str:
        with self._changed:
            return "\n".join(self.lines[-count:])

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def _watch_descendants(self) -> None:
        try:
            runner = psutil.Process(self.process.pid)
        except psutil.NoSuchProcess:
            return
        while self.process.poll() is None:
            try:
                children = runner.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                try:
                    key = (child.pid, child.create_time())
                    if key not in self.descendants:
                        self.descendants[key] = " ".join(child.cmdline())
                except psutil.Error:
                    continue
            time.sleep(0.2)


def _still_running(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return (
            process.create_time() == started
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.NoSuchProcess:
        return False


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def isolated_stack_env(run_id: str, **overrides: str) -> Iterator[dict[str, str]]:
    """Environment for one isolated stack: free ports, own database and names."""
    stack_id = f"{run_id}_{uuid.uuid4().hex[:6]}"
    database = f"ticker_runner_{stack_id}"
    redis_db = claim_redis_db()
    redis_url = f"{TEST_REDIS_URL}/{redis_db}"
    namespace = f"test-runner-{stack_id}"
    ws_port, rest_port = free_port(), free_port()

    # Empty, not migrated: applying migrations is the runner's first step.
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{database}",
        TICKER_WEB_PORT=str(free_port()),
        TICKER_FLOWER_PORT=str(free_port()),
        TICKER_SIM_WS_PORT=str(ws_port),
        TICKER_SIM_REST_PORT=str(rest_port),
        TICKER_KITE_WS_ROOT=f"ws://127.0.0.1:{ws_port}",
        TICKER_KITE_REST_ROOT=f"http://127.0.0.1:{rest_port}",
        TICKER_EVENTS_CHANNEL=f"{namespace}:events",
        TICKER_TICKS_CHANNEL=f"{namespace}:ticks",
        TICKER_EVENTS_STREAM=f"{namespace}:events:stream",
        TICKER_KEY_PREFIX=f"{namespace}:",
        TICKER_ACCOUNT_QUEUE_PREFIX=f"{namespace}.account.",
        TICKER_LOG_LEVEL="INFO",
        # Off unless a test asks: fixed default ports would clash between stacks.
        TICKER_WORKER_METRICS_PORT="0",
    )
    env.update(overrides)
    try:
        yield env
    finally:
        drop_database(database)
        release_redis_db(redis_db)


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


@contextmanager
def running_stack(stack_id: str, workdir: Path, **env: str) -> Iterator[Stack]:
    """`ticker run` on an isolated environment, up; interrupted and reaped after."""
    with isolated_stack_env(stack_id, **env) as stack_env:
        running = RunningStack([TICKER, "run"], stack_env, workdir)
        try:
            running.wait_for_line(UP_LINE, UP_TIMEOUT_S)
            yield Stack(running, stack_env)
            running.interrupt()
        finally:
            running.kill_everything()

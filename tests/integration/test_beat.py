"""`ticker beat` keeps its schedule across a restart and catches up with one run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.stack import TICKER

DUE = re.compile(r"Sending due task backfill-gaps")
EVERY_S = 3
pytestmark = pytest.mark.timeout(120)


class Beat:
    """`ticker beat` in its own session, its output read as it comes."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.first_due = threading.Event()
        self._sent = threading.Condition()
        self._process = subprocess.Popen(
            [TICKER, "beat"], env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._sent:
                self.lines.append(line)
                self._sent.notify_all()
            if DUE.search(line):
                self.first_due.set()

    def sent(self) -> int:
        return sum(1 for line in list(self.lines) if DUE.search(line))

    def wait_sent(self, count: int, timeout_s: float) -> bool:
        """Whether beat sent the job `count` times within `timeout_s` (start-up included)."""
        with self._sent:
            return self._sent.wait_for(lambda: self.sent() >= count, timeout_s)

    def stop(self) -> int:
        """Stop beat; how many times it sent the gap-fill job."""
        os.killpg(self._process.pid, signal.SIGTERM)
        self._process.wait(timeout=15)
        self._reader.join(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()
        return self.sent()


def test_a_restarted_beat_fires_a_missed_job_once_not_once_per_missed_run(
    settings, tmp_path
):
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TICKER_BACKFILL_QUEUE": f"{settings.key_prefix}backfill",
        "TICKER_BACKFILL_GAP_FILL_EVERY_S": str(EVERY_S),
        "TICKER_BEAT_SCHEDULE_FILE": str(tmp_path / "schedule"),
    }

    first = Beat(env, tmp_path)
    # Its first run and one regular run, however long start-up takes on a busy machine.
    ran_twice = first.wait_sent(2, 30 + EVERY_S)
    first.stop()
    assert ran_twice, "".join(first.lines)
    time.sleep(4 * EVERY_S)  # four runs missed while beat is down

    second = Beat(env, tmp_path)
    # However long beat takes to start, its catch-up run is the first thing it
    # sends; watching for a little less than one period after it leaves no room
    # for a regular run.
    caught_up = second.first_due.wait(30)
    time.sleep(0.6 * EVERY_S)
    fired_second = second.stop()

    assert caught_up, "".join(second.lines)
    assert fired_second == 1, "".join(second.lines)

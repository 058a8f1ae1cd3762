"""`ticker beat` keeps its schedule across a restart and catches up with one run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.stack import TICKER

DUE = re.compile(r"Sending due task backfill-gaps")
EVERY_S = 2
pytestmark = pytest.mark.timeout(90)


def run_beat(env: dict[str, str], cwd: Path, seconds: float) -> int:
    """Run beat for a while; how many times it sent the gap-fill job."""
    process = subprocess.Popen([TICKER, "beat"], env=env, cwd=cwd, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    time.sleep(seconds)
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    return len(DUE.findall(output))


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

    first = run_beat(env, tmp_path, 5.5)
    time.sleep(4 * EVERY_S)  # four runs missed while beat is down
    second = run_beat(env, tmp_path, 1.0)

    assert first >= 2
    assert second == 1

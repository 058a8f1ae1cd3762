"""Processes started by `ticker run` end when it ends, even when it is killed outright.

Each child leads a session of its own (so a stop can signal its whole group), which
also means nothing takes it down with a runner that dies by SIGKILL: the stack would
live on, orphaned, holding its ports. On Linux the kernel can send a process a
signal when its parent dies; a child asks for SIGTERM, its ordinary stop, before it
turns into gunicorn, Celery or the simulator (the request survives exec).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

# Set by the runner in its children's environment: the pid they must outlive not.
RUNNER_PID_ENV = "TICKER_RUNNER_PID"
# From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def follow_runner() -> None:
    """Ask for SIGTERM when the runner dies; a no-op outside `ticker run` or Linux."""
    runner_pid = os.environ.get(RUNNER_PID_ENV)
    if not runner_pid or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("lifeline not set: prctl failed errno=%d", ctypes.get_errno())
        return
    if os.getppid() != int(runner_pid):
        # The runner died before the request was in place: stop now, as it would.
        os.kill(os.getpid(), signal.SIGTERM)

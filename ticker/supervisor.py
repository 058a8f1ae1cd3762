"""Child processes of `ticker run`: started, relayed, restarted and stopped.

Each child gets its own session, so its process group holds everything it forks
(gunicorn workers, Celery threads live in the leader) and one signal to the group
reaches all of them. A terminal's Ctrl-C therefore reaches only the runner, which
then stops the groups in order instead of every process racing to exit at once.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

logger = logging.getLogger(__name__)

# How long a stopped group may take to exit before it is killed.
STOP_TIMEOUT_S = 10.0
# Restart delays double from the first to the cap; a child that stayed up this
# long is considered healthy again and its next restart starts from the first.
RESTART_FIRST_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 30.0
RESTART_STABLE_AFTER_S = 30.0
# Room for the name column in relayed output, like docker-compose's log prefix.
NAME_WIDTH = 14

# The exit code of a `ticker` command refusing its configuration: restarting it
# would only print the same refusal again, so the supervisor gives up on it.
EXIT_CONFIG = 2

Process = subprocess.Popen[bytes]


class LineRelay:
    """Writes every child's output to one stream as `name | line`.

    One lock per stream keeps lines from different children whole.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, name: str, line: str) -> None:
        with self._lock:
            self._stream.write(f"{name:<{NAME_WIDTH}} | {line}\n")
            self._stream.flush()

    def follow(self, name: str, pipe: IO[bytes]) -> threading.Thread:
        """Relay `pipe` until the child closes it, on a daemon thread."""
        thread = threading.Thread(
            target=self._pump, args=(name, pipe), name=f"relay-{name}", daemon=True
        )
        thread.start()
        return thread

    def _pump(self, name: str, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                self.write(name, raw.decode("utf-8", "replace").rstrip("\r\n"))


def spawn(
    name: str,
    argv: list[str],
    relay: LineRelay,
    *,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> Process:
    """Start `argv` as the leader of a new session, its output relayed under `name`."""
    process = subprocess.Popen(
        argv,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **credentials(user),
    )
    assert process.stdout is not None
    relay.follow(name, process.stdout)
    logger.debug("process started: name=%s pid=%s argv=%s", name, process.pid, argv)
    return process


def credentials(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as `user` with that account's groups.

    Only the uid would leave the child in root's groups, where group permission
    bits, not the "other" ones, decide what it may open.
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": os.getgrouplist(user, entry.pw_gid),
    }


def describe_exit(returncode: int) -> str:
    """`code 3` or `signal SIGKILL`, as a person reads an exit status."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the group led (once) by `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Someone else's process reuses the group id; none of ours is left.
        return False
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(
    processes: Mapping[Process, signal.Signals],
    timeout_s: float = STOP_TIMEOUT_S,
    *,
    names: Mapping[int, str] | None = None,
) -> None:
    """Signal each process group, wait for all to empty, then kill what is left.

    The leaders are reaped here, so no zombie outlives the runner. The groups are
    signalled together, so the whole stop takes at most `timeout_s`.
    """
    for process, sig in processes.items():
        signal_group(process.pid, sig)

    deadline = time.monotonic() + timeout_s
    pending = list(processes)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not _reaped_and_empty(p)]
        if pending:
            time.sleep(0.1)

    for process in pending:
        name = (names or {}).get(process.pid, str(process.args))
        logger.warning(
            "%s did not stop within %.0fs; killing its process group pid=%s",
            name,
            timeout_s,
            process.pid,
        )
        signal_group(process.pid, signal.SIGKILL)
        process.wait()


def _reaped_and_empty(process: Process) -> bool:
    return process.poll() is not None and not group_alive(process.pid)


@dataclass
class _Child:
    name: str
    argv: list[str]
    process: Process
    started_at: float
    restarts_in_a_row: int = 0
    restart_at: float | None = None


class Supervisor:
    """Keeps named long-running children alive, as a `restart: always` policy does.

    `check()` is called from the runner's loop: it notices children that exited,
    says so, and starts them again after a delay that grows while they keep dying.
    A child that exits refusing its configuration (code 2) is not restarted: it is
    listed in `refused`, for the runner to stop and say what to fix.
    """

    def __init__(
        self,
        relay: LineRelay,
        env: Mapping[str, str],
        *,
        first_delay_s: float = RESTART_FIRST_DELAY_S,
        max_delay_s: float = RESTART_MAX_DELAY_S,
        stable_after_s: float = RESTART_STABLE_AFTER_S,
    ) -> None:
        self._relay = relay
        self._env = dict(env)
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._stable_after_s = stable_after_s
        self._children: dict[str, _Child] = {}
        self.refused: list[str] = []

    def start(self, name: str, argv: list[str]) -> None:
        process = spawn(name, argv, self._relay, env=self._env)
        self._children[name] = _Child(name, argv, process, time.monotonic())
        logger.info("%s started: pid=%s", name, process.pid)

    def pids(self) -> dict[str, int]:
        """Leader pid of every child that is running now."""
        return {
            c.name: c.process.pid
            for c in self._children.values()
            if c.process.poll() is None
        }

    def check(self) -> None:
        """Schedule a restart for each child that exited; start those that are due."""
        now = time.monotonic()
        for child in self._children.values():
            if child.name in self.refused:
                continue
            if child.restart_at is None and child.process.poll() is not None:
                if child.process.returncode == EXIT_CONFIG:
                    self.refused.append(child.name)
                    continue
                self._schedule_restart(child, now)
            elif child.restart_at is not None and now >= child.restart_at:
                self._restart(child, now)

    def stop_all(self, timeout_s: float = STOP_TIMEOUT_S, last: Iterable[str] = ()) -> None:
        """SIGTERM every child's group, then SIGKILL the groups still there.

        Children named in `last` are stopped after all the others, so the clients
        of a server among them can close their connections to it cleanly first.
        """
        later = set(last)
        children = list(self._children.values())
        self._children.clear()
        for batch in ([c for c in children if c.name not in later],
                      [c for c in children if c.name in later]):
            if not batch:
                continue
            logger.info("stopping %s", ", ".join(c.name for c in batch))
            stop_groups(
                {c.process: signal.SIGTERM for c in batch},
                timeout_s,
                names={c.process.pid: c.name for c in batch},
            )

    def _schedule_restart(self, child: _Child, now: float) -> None:
        assert child.process.returncode is not None
        if now - child.started_at >= self._stable_after_s:
            child.restarts_in_a_row = 0
        delay = min(self._first_delay_s * 2**child.restarts_in_a_row, self._max_delay_s)
        child.restart_at = now + delay

        # Anything the leader forked dies with it, so the new one finds its
        # ports and queues free.
        signal_group(child.process.pid, signal.SIGKILL)
        logger.warning(
            "%s exited with %s; restarting in %gs",
            child.name,
            describe_exit(child.process.returncode),
            delay,
        )

    def _restart(self, child: _Child, now: float) -> None:
        child.process = spawn(child.name, child.argv, self._relay, env=self._env)
        child.started_at = now
        child.restart_at = None
        child.restarts_in_a_row += 1
        logger.info("%s restarted: pid=%s", child.name, child.process.pid)


def run_to_completion(
    name: str,
    argv: list[str],
    relay: LineRelay,
    env: Mapping[str, str],
    stop: threading.Event,
) -> int | None:
    """Run a one-shot child to its end; None when `stop` was set before it ended."""
    process = spawn(name, argv, relay, env=env)
    while process.poll() is None:
        if stop.wait(0.1):
            stop_groups({process: signal.SIGTERM}, names={process.pid: name})
            return None
    # A one-shot command may leave a forked helper behind; it goes with it.
    signal_group(process.pid, signal.SIGKILL)
    return process.returncode

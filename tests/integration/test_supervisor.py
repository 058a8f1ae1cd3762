"""The runner's process handling, on small stand-in processes of its own."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import sys
import textwrap
import threading
import time

import psutil

from ticker.supervisor import (
    LineRelay,
    Supervisor,
    run_to_completion,
    spawn,
    stop_groups,
)

# A parent that forks a child which ignores SIGTERM, as a stuck worker would.
STUBBORN_FAMILY = textwrap.dedent(
    """
    import os, signal, time
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("child", os.getpid(), flush=True)
    while True:
        time.sleep(1)
    """
)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_child_output_is_relayed_line_by_line_under_its_name():
    output = io.StringIO()
    relay = LineRelay(output)

    process = spawn("greeter", _python("print('hello'); print('bye')"), relay)
    process.wait()
    _wait_until(lambda: "bye" in output.getvalue())

    lines = output.getvalue().splitlines()
    assert [line.split(" | ") for line in lines] == [
        ["greeter".ljust(14), "hello"],
        ["greeter".ljust(14), "bye"],
    ]


def test_stop_groups_kills_a_child_that_ignores_sigterm_after_the_timeout():
    output = io.StringIO()
    leader = spawn("stubborn", _python(STUBBORN_FAMILY), LineRelay(output))
    _wait_until(lambda: "child" in output.getvalue())
    child_pid = int(re.search(r"child (\d+)", output.getvalue()).group(1))

    started = time.monotonic()
    stop_groups({leader: signal.SIGTERM}, timeout_s=1.0)
    elapsed = time.monotonic() - started

    assert leader.returncode == -signal.SIGTERM
    assert 1.0 <= elapsed < 5.0
    _wait_until(lambda: not _running(child_pid))


def test_supervisor_restarts_a_dead_child_with_growing_delays_and_says_so(caplog):
    caplog.set_level(logging.INFO, logger="ticker.supervisor")
    supervisor = Supervisor(
        LineRelay(io.StringIO()), os.environ, first_delay_s=0.1, max_delay_s=0.2
    )
    supervisor.start("crasher", _python("import sys; sys.exit(3)"))

    try:
        _wait_until(lambda: _tick(supervisor) or caplog.text.count("restarting") >= 3)
    finally:
        supervisor.stop_all(timeout_s=2.0)

    delays = re.findall(
        r"crasher exited with code 3; restarting in ([\d.]+)s", caplog.text
    )
    assert delays[:3] == ["0.1", "0.2", "0.2"]
    assert "crasher restarted" in caplog.text


def test_a_child_refusing_its_configuration_is_not_restarted(caplog):
    caplog.set_level(logging.INFO, logger="ticker.supervisor")
    supervisor = Supervisor(
        LineRelay(io.StringIO()), os.environ, first_delay_s=0.05, max_delay_s=0.05
    )
    supervisor.start("refuser", _python("import sys; sys.exit(2)"))

    try:
        _wait_until(lambda: _tick(supervisor) or supervisor.refused)
        time.sleep(0.3)
        supervisor.check()
    finally:
        supervisor.stop_all(timeout_s=2.0)

    assert supervisor.refused == ["refuser"]
    assert "restart" not in caplog.text


def test_supervisor_stop_all_leaves_no_process_of_any_child():
    supervisor = Supervisor(LineRelay(io.StringIO()), os.environ)
    supervisor.start("sleeper", _python("import time; time.sleep(60)"))
    supervisor.start("family", _python(STUBBORN_FAMILY))
    _wait_until(lambda: len(_family(supervisor)) == 3)
    pids = _family(supervisor)

    supervisor.stop_all(timeout_s=1.0)

    _wait_until(lambda: not any(_running(pid) for pid in pids))
    assert supervisor.pids() == {}


def test_run_to_completion_returns_the_exit_code_or_none_when_stopped():
    relay = LineRelay(io.StringIO())
    stop = threading.Event()

    finished = run_to_completion(
        "once", _python("raise SystemExit(4)"), relay, os.environ, stop
    )
    threading.Timer(0.3, stop.set).start()
    stopped = run_to_completion(
        "long", _python("import time; time.sleep(60)"), relay, os.environ, stop
    )

    assert finished == 4
    assert stopped is None


def _tick(supervisor: Supervisor) -> bool:
    supervisor.check()
    return False


def _family(supervisor: Supervisor) -> list[int]:
    """The supervisor's children and theirs (other tests may run processes too)."""
    pids = []
    for leader in supervisor.pids().values():
        pids.append(leader)
        pids += [p.pid for p in psutil.Process(leader).children(recursive=True)]
    return pids


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

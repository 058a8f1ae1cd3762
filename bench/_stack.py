"""A whole `ticker run` stack for one benchmark: isolated, found by pid, torn down.

This mirrors `tests/stack.py` without pytest: free ports, a database and a Redis db
number of the run's own (claimed with the tests' own marker key, so a test session
and a benchmark never share one), channel and queue names of its own, and the real
`ticker run` command in a scratch directory. Processes are stopped by pid only:
other people's stacks run on the same machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import redis
from psycopg import sql

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TICKER = str(Path(sys.executable).parent / "ticker")
ADMIN_DATABASE_URL = os.environ.get(
    "TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# The key tests/conftest.py sets to claim a db; using it keeps tests out of ours.
REDIS_CLAIM_KEY = "ticker-test:claimed"

STACK_UP_TIMEOUT_S = 120.0
STACK_STOP_TIMEOUT_S = 30.0
UP_LINE = re.compile(r"stack up: api=http://\S+")


@dataclass(frozen=True)
class BenchAccount:
    """One simulated Kite account for the stack and its simulator."""

    id: str
    max_connections: int = 3
    max_instruments_per_connection: int = 3000

    @property
    def api_key(self) -> str:
        return f"benchkey_{self.id}"

    @property
    def access_token(self) -> str:
        return f"benchtoken_{self.id}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def claim_redis_db() -> int:
    """An empty Redis db number, claimed atomically the way the tests claim theirs."""
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_BASE_URL}/{number}")
        if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, "bench", nx=True):
            return number
    raise RuntimeError("no empty Redis db between 1 and 15; wait for other runs to end")


def write_accounts_file(path: Path, accounts: Sequence[BenchAccount]) -> Path:
    lines = ["accounts:"]
    for account in accounts:
        lines += [
            f"  - id: {account.id}",
            f"    api_key: {account.api_key}",
            f"    access_token: {account.access_token}",
            f"    max_connections: {account.max_connections}",
            f"    max_instruments_per_connection: {account.max_instruments_per_connection}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def isolated_env(name: str, workdir: Path, accounts: Sequence[BenchAccount],
                 **overrides: str) -> Iterator[dict[str, str]]:
    """Environment for one stack: its own ports, database, Redis db and names.

    The database and Redis db are emptied and released on exit, whatever happened.
    """
    run_id = f"{name}_{uuid.uuid4().hex[:6]}"
    database = f"ticker_bench_{run_id}"
    namespace = f"bench-{run_id}"
    redis_url = f"{REDIS_BASE_URL}/{claim_redis_db()}"
    ws_port, rest_port = free_port(), free_port()
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{database}",
        TICKER_ACCOUNTS_FILE=str(write_accounts_file(workdir / "accounts.yaml", accounts)),
        TICKER_WEB_PORT=str(free_port()),
        TICKER_FLOWER_PORT=str(free_port()),
        TICKER_SIM_WS_PORT=str(ws_port),
        TICKER_SIM_REST_PORT=str(rest_port),
        TICKER_KITE_WS_ROOT=f"ws://127.0.0.1:{ws_port}",
        TICKER_KITE_REST_ROOT=f"http://127.0.0.1:{rest_port}",
        TICKER_EVENTS_CHANNEL=f"{namespace}:events",
        TICKER_TICKS_CHANNEL=f"{namespace}:ticks",
        TICKER_KEY_PREFIX=f"{namespace}:",
        TICKER_ACCOUNT_QUEUE_PREFIX=f"{namespace}.account.",
        TICKER_BACKFILL_QUEUE=f"{namespace}.backfill",
        TICKER_BEAT_SCHEDULE_FILE=str(workdir / "celerybeat-schedule"),
        TICKER_LOG_LEVEL="INFO",
        # A running `make run` holds the default ports; the benchmarks need none.
        TICKER_WORKER_METRICS_PORT="0",
        # Backfill is paced to one historical request a day: each subscribe still
        # queues its backfill task (as in production), but the candle fetching and
        # upserting that follows would otherwise load the 2 cores for the whole run.
        TICKER_HISTORICAL_REQUESTS_PER_WINDOW="1",
        TICKER_HISTORICAL_WINDOW_S="86400",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    try:
        yield env
    finally:
        _drop_database(database)
        redis.Redis.from_url(redis_url).flushdb()


def _drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class Stack:
    """A running `ticker run` and the addresses, names and processes of its stack."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.log_path = workdir / "stack.log"
        self._log = self.log_path.open("w")
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [TICKER, "run"],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._seen: dict[tuple[int, float], str] = {}
        threading.Thread(target=self._read_output, daemon=True).start()
        threading.Thread(target=self._watch_descendants, daemon=True).start()

    # -- addresses and names --------------------------------------------------------

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['TICKER_WEB_PORT']}"

    @property
    def web_port(self) -> int:
        return int(self.env["TICKER_WEB_PORT"])

    @property
    def sim_rest(self) -> str:
        return self.env["TICKER_KITE_REST_ROOT"].rstrip("/")

    @property
    def redis_url(self) -> str:
        return self.env["REDIS_URL"]

    @property
    def events_channel(self) -> str:
        return self.env["TICKER_EVENTS_CHANNEL"]

    @property
    def ticks_channel(self) -> str:
        return self.env["TICKER_TICKS_CHANNEL"]

    def state_key(self, account_id: str) -> str:
        return f"{self.env['TICKER_KEY_PREFIX']}account:{account_id}:state"

    # -- lifecycle ------------------------------------------------------------------

    def wait_up(self, timeout_s: float = STACK_UP_TIMEOUT_S) -> float:
        """Seconds until the runner reported the whole stack answering."""
        started = time.monotonic()
        deadline = started + timeout_s
        with self._changed:
            while not any(UP_LINE.search(line) for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    raise RuntimeError(
                        f"stack not up after {timeout_s:.0f} s "
                        f"(runner exit={self.process.poll()}); last lines:\n{self.tail()}"
                    )
                self._changed.wait(min(remaining, 0.5))
        return time.monotonic() - started

    def stop(self) -> None:
        """SIGINT to the runner (as Ctrl-C), then SIGKILL by pid for anything left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STACK_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + 3.0
        while True:
            alive = [key for key in list(self._seen) if _alive(*key)]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid, started in alive:
            if _alive(pid, started):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()

    def tail(self, count: int = 60) -> str:
        with self._changed:
            return "\n".join(self.lines[-count:])

    def lines_matching(self, pattern: re.Pattern[str]) -> list[str]:
        with self._changed:
            return [line for line in self.lines if pattern.search(line)]

    # -- processes ------------------------------------------------------------------

    def worker_process(self, account_id: str) -> psutil.Process:
        """The Celery worker process of one account (the one holding its sockets)."""
        queue = f"{self.env['TICKER_ACCOUNT_QUEUE_PREFIX']}{account_id}"
        return self._find(lambda cmd: "worker" in cmd and queue in cmd)

    def web_master(self) -> psutil.Process:
        bind = f"127.0.0.1:{self.env['TICKER_WEB_PORT']}"
        found = [
            p for p in self._children() if "gunicorn" in _cmdline(p) and bind in _cmdline(p)
        ]
        pids = {p.pid for p in found}
        masters = [p for p in found if p.ppid() not in pids]
        if not masters:
            raise LookupError(f"no gunicorn master bound to {bind}")
        return masters[0]

    def simulator_process(self) -> psutil.Process:
        return self._find(lambda cmd: cmd.endswith(" sim"))

    def _find(self, matches) -> psutil.Process:  # type: ignore[no-untyped-def]
        for process in self._children():
            if matches(_cmdline(process)):
                return process
        raise LookupError("no such process below the runner")

    def _children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._log.write(line + "\n")
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def _watch_descendants(self) -> None:
        while self.process.poll() is None:
            for child in self._children():
                try:
                    key = (child.pid, child.create_time())
                    self._seen.setdefault(key, _cmdline(child))
                except psutil.Error:
                    continue
            time.sleep(0.3)


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _alive(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextmanager
def running_stack(name: str, accounts: Sequence[BenchAccount], *,
                  keep_workdir: bool = False, **overrides: str) -> Iterator[Stack]:
    """`ticker run` with its own everything, up and answering; stopped on exit."""
    workdir = Path(tempfile.mkdtemp(prefix=f"ticker-bench-{name}-"))
    failed = False
    try:
        with isolated_env(name, workdir, accounts, **overrides) as env:
            stack = Stack(env, workdir)
            try:
                stack.wait_up()
                yield stack
            except BaseException:
                failed = True
                raise
            finally:
                stack.stop()
    finally:
        if failed or keep_workdir:
            print(f"# stack output kept in {workdir / 'stack.log'}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


class SimulatorProcess:
    """A `ticker sim` of the benchmark's own, outside the stack, restartable at will.

    A stack pointed at it (TICKER_KITE_WS_ROOT / TICKER_KITE_REST_ROOT) sees it as
    Kite: when it is restarted with another tick interval, the account workers
    reconnect and resubscribe by themselves, without restarting the stack.
    """

    LISTENING = re.compile(r"simulator listening")
    DISCONNECTED = re.compile(r"ticker disconnected id=(\d+) .* frames=(\d+) ticks=(\d+)")

    def __init__(self, env: Mapping[str, str], ws_port: int, rest_port: int,
                 tick_interval_s: float, log_path: Path) -> None:
        child_env = dict(env)
        child_env.update(
            TICKER_SIM_WS_PORT=str(ws_port),
            TICKER_SIM_REST_PORT=str(rest_port),
            TICKER_SIM_TICK_INTERVAL_S=repr(tick_interval_s),
            TICKER_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        self.rest = f"http://127.0.0.1:{rest_port}"
        self.tick_interval_s = tick_interval_s
        self.lines: list[str] = []
        self._log = log_path.open("a")
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [TICKER, "sim"], env=child_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        threading.Thread(target=self._read_output, daemon=True).start()

    def wait_listening(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not any(self.LISTENING.search(line) for line in self.lines):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("benchmark simulator did not start:\n"
                                       + "\n".join(self.lines[-30:]))
                self._changed.wait(0.5)

    def stop(self) -> dict[int, tuple[int, int]]:
        """SIGTERM and wait; per connection id, (frames, ticks) it sent in its life."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        time.sleep(0.2)  # the output reader drains the last lines
        totals = {}
        with self._changed:
            for line in self.lines:
                match = self.DISCONNECTED.search(line)
                if match:
                    totals[int(match[1])] = (int(match[2]), int(match[3]))
        self._log.close()
        return totals

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._log.write(line + "\n")
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()


def env_overrides(pairs: Sequence[str] | None) -> dict[str, str]:
    """`--env KEY=VALUE` flags as a dict, for settings to try without code changes."""
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env takes KEY=VALUE, got {pair!r}")
        overrides[key] = value
    return overrides


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (as `timeout` sends) into SystemExit, so stacks are torn down."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def stack_process_groups(stack: Stack) -> dict[str, list[psutil.Process]]:
    """The stack's processes by role: web (master and workers), each worker, the rest."""
    groups: dict[str, list[psutil.Process]] = {}
    prefix = stack.env["TICKER_ACCOUNT_QUEUE_PREFIX"]
    for process in stack._children():
        cmd = _cmdline(process)
        if "gunicorn" in cmd:
            role = "web"
        elif prefix in cmd:
            role = "worker-" + cmd.split(prefix, 1)[1].split()[0]
        elif "backfill" in cmd:
            role = "backfill-worker"
        elif cmd.endswith(" sim"):
            role = "simulator"
        elif " beat" in cmd:
            role = "beat"
        elif " flower" in cmd:
            role = "flower"
        else:
            continue
        groups.setdefault(role, []).append(process)
    database = stack.env["DATABASE_URL"].rsplit("/", 1)[1]
    for process in psutil.process_iter(["name"]):
        cmd = _cmdline(process)
        if cmd.startswith("postgres:") and f" {database} " in f"{cmd} ":
            groups.setdefault("postgres-backends", []).append(process)
        elif (process.info["name"] or "").startswith("redis-server"):
            groups.setdefault("redis-server(shared)", []).append(process)
    groups["runner"] = [psutil.Process(stack.process.pid)]
    groups["bench"] = [psutil.Process()]
    return groups


class CpuMeter:
    """CPU seconds used by named groups of processes between start() and stop()."""

    def __init__(self, groups: Mapping[str, Sequence[psutil.Process]]) -> None:
        self._groups = {name: list(processes) for name, processes in groups.items()}
        self._before: dict[str, float] = {}
        self._started = 0.0

    def start(self) -> CpuMeter:
        self._before = {name: _cpu_seconds(ps) for name, ps in self._groups.items()}
        self._machine = psutil.cpu_times()
        self._started = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        """Percent of one core each group used over the interval.

        `machine_busy` is the whole machine, every user's processes included, as a
        percent of all its cores.
        """
        elapsed = max(time.monotonic() - self._started, 1e-9)
        used = {
            name: round(100 * (_cpu_seconds(ps) - self._before[name]) / elapsed, 1)
            for name, ps in self._groups.items()
        }
        now = psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0)) - (
            self._machine.idle + getattr(self._machine, "iowait", 0))
        total = sum(now) - sum(self._machine)
        used["machine_busy"] = round(100 * (1 - idle / total), 1) if total > 0 else 0.0
        return used


def _cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


class Profiles:
    """py-spy recordings of stack processes over a phase, when py-spy is installed.

    Off unless a benchmark is given --profile DIR; the files (speedscope by default)
    open at https://www.speedscope.app. Samples are taken only from the thread
    holding the GIL (py-spy --gil), i.e. Python CPU time: py-spy cannot tell idle
    threads from busy ones in every container, and without --gil threads waiting on
    a lock or a socket would count as busy.
    """

    def __init__(self, out_dir: Path | None, fmt: str = "speedscope") -> None:
        self.out_dir = out_dir
        self.fmt = fmt
        self._running: list[subprocess.Popen[bytes]] = []
        self._program = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if out_dir is not None:
            if not Path(self._program).exists():
                raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
            out_dir.mkdir(parents=True, exist_ok=True)

    def record(self, name: str, pid: int, seconds: float) -> None:
        if self.out_dir is None:
            return
        suffix = {"speedscope": "speedscope.json", "raw": "txt", "flamegraph": "svg"}[self.fmt]
        argv = [self._program, "record", "--pid", str(pid), "--duration", str(max(int(seconds), 1)),
                "--rate", "200", "--format", self.fmt, "--threads", "--gil",
                "--output", str(self.out_dir / f"{name}.{suffix}")]
        self._running.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))

    def wait(self) -> None:
        for process in self._running:
            process.wait()
        self._running.clear()

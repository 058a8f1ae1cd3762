"""Redis and PostgreSQL really stopped and started under a running stack.

The stack here has a Redis and a PostgreSQL of its own, started from the project's
embedded servers on spare ports, so stopping them disturbs nothing else. During an
outage the API answers 503 naming the missing part (never 500, never a 202 it cannot
keep); afterwards everything recovers by itself, Redis coming back empty included.
"""

from __future__ import annotations

import io
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port
from tests.e2e.test_subscriptions import (
    EVENT_TIMEOUT_S,
    event_for,
    nfo_tokens,
    subscribe,
)
from tests.listen import ChannelListener
from tests.stack import Stack, running_stack
from ticker.embedded import ensure_postgres, ensure_redis
from ticker.supervisor import LineRelay

RECOVERY_TIMEOUT_S = 60.0
pytestmark = pytest.mark.timeout(300)


class Server:
    """One embedded server that a test can stop and start again on the same port."""

    def __init__(self, starter, url: str, var_dir: Path) -> None:
        self._starter = starter
        self.url = url
        self._var_dir = var_dir
        self._running: ExitStack | None = None

    def start(self) -> None:
        self._running = ExitStack()
        self._running.enter_context(self._starter(self.url, self._var_dir,
                                                  LineRelay(io.StringIO())))

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture(scope="module")
def own_servers(tmp_path_factory: pytest.TempPathFactory):
    var_dir = tmp_path_factory.mktemp("own-servers")
    redis_server = Server(ensure_redis, f"redis://127.0.0.1:{free_port()}/0", var_dir)
    postgres = Server(ensure_postgres,
                      f"postgresql://postgres@127.0.0.1:{free_port()}/ticker", var_dir)
    redis_server.start()
    postgres.start()
    yield redis_server, postgres
    redis_server.stop()
    postgres.stop()


@pytest.fixture(scope="module")
def outage_stack(own_servers, run_id: str, tmp_path_factory: pytest.TempPathFactory):
    redis_server, postgres = own_servers
    workdir = tmp_path_factory.mktemp("outage-stack")
    with running_stack(f"{run_id}out", workdir, REDIS_URL=redis_server.url,
                       DATABASE_URL=postgres.url, TICKER_SIM_TICK_INTERVAL_S="0.5",
                       TICKER_WORKER_RECONCILE_S="2") as stack:
        yield stack


def socket_ids(stack: Stack) -> set[int]:
    return {c["id"] for c in
            requests.get(f"{stack.sim_rest}/_sim/connections", timeout=5).json()}


def wait_healthy(stack: Stack) -> float:
    """Seconds until /health answers 200 again."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_TIMEOUT_S:
        try:
            if requests.get(f"{stack.api}/health", timeout=5).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"not healthy {RECOVERY_TIMEOUT_S}s after the outage:\n"
                f"{stack.process.tail(60)}")


def assert_refused_while_down(stack: Stack, token: int, part: str, codes: set[str]) -> None:
    health = requests.get(f"{stack.api}/health", timeout=15)
    assert health.status_code == 503
    assert part in health.json()["failing"]
    answer = requests.post(f"{stack.api}/subscriptions",
                           json={"instrument_token": token}, timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] in codes


def test_redis_restarting_empty_is_survived(outage_stack, own_servers, record_property):
    redis_server, _ = own_servers
    live, during, after = nfo_tokens(outage_stack, 3, skip=280)
    with ChannelListener(outage_stack.redis_url, outage_stack.events_channel) as events:
        subscribe(outage_stack, live, "FULL")
        events.wait_for(event_for(live, "subscription_created"), EVENT_TIMEOUT_S)
    sockets_before = socket_ids(outage_stack)

    redis_server.stop()
    assert_refused_while_down(outage_stack, during, "redis",
                              {"redis_unavailable", "broker_unavailable"})
    redis_server.start()
    healthy_after_s = wait_healthy(outage_stack)

    started = time.monotonic()
    with ChannelListener(outage_stack.redis_url, outage_stack.ticks_channel) as ticks:
        ticks.wait_for(lambda t: t["instrument_token"] == live, 10.0)
    ticks_after_s = time.monotonic() - started
    with ChannelListener(outage_stack.redis_url, outage_stack.events_channel) as events:
        assert subscribe(outage_stack, after, "LTP").status_code == 202
        events.wait_for(event_for(after, "subscription_created"), 15.0)
    record_property("seconds from Redis back to /health 200", round(healthy_after_s, 2))
    record_property("seconds more to the next tick on Redis", round(ticks_after_s, 2))

    never_answered = requests.get(f"{outage_stack.api}/subscriptions/{during}", timeout=5)
    assert never_answered.status_code == 404
    # Publishing failed for a while; the Kite sockets never noticed.
    assert socket_ids(outage_stack) == sockets_before


def test_postgres_restarting_is_survived_and_ticks_never_stop(outage_stack, own_servers,
                                                              record_property):
    _, postgres = own_servers
    live, during, after = nfo_tokens(outage_stack, 3, skip=290)
    with ChannelListener(outage_stack.redis_url, outage_stack.events_channel) as events:
        subscribe(outage_stack, live, "QUOTE")
        events.wait_for(event_for(live, "subscription_created"), EVENT_TIMEOUT_S)

    with ChannelListener(outage_stack.redis_url, outage_stack.ticks_channel) as ticks:
        ticks.wait_for(lambda t: t["instrument_token"] == live, 10.0)
        postgres.stop()
        down_at = time.monotonic()
        assert_refused_while_down(outage_stack, during, "database",
                                  {"database_unavailable"})
        streamed = [at for at, t in ticks.messages
                    if t["instrument_token"] == live and at > down_at]
        assert len(streamed) >= 3, (
            f"ticks stopped while PostgreSQL was down:\n{outage_stack.process.tail(80)}"
        )
        postgres.start()
        healthy_after_s = wait_healthy(outage_stack)

    with ChannelListener(outage_stack.redis_url, outage_stack.events_channel) as events:
        assert subscribe(outage_stack, after, "LTP").status_code == 202
        events.wait_for(event_for(after, "subscription_created"), 15.0)
    record_property("ticks streamed while PostgreSQL was down", len(streamed))
    record_property("seconds from PostgreSQL back to /health 200", round(healthy_after_s, 2))

    rows = requests.get(f"{outage_stack.api}/subscriptions", timeout=5).json()
    by_token = {s["instrument_token"]: s["status"] for s in rows["subscriptions"]}
    assert by_token[live] == "active" and by_token[after] == "active"
    assert during not in by_token

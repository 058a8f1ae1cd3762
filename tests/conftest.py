"""Fixtures shared by every test: a database and Redis namespace of the run's own.

Tests talk to the real PostgreSQL and Redis this machine runs (`.ci/run` starts them).
Each test session creates its own database and takes an empty Redis db number, and
gives its pub/sub channels a unique suffix (channels are global to a Redis server).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from ticker.config import Settings
from ticker.storage.migrations import apply_migrations

ADMIN_DATABASE_URL = os.environ.get(
    "TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
SAMPLES_DIR = Path(
    os.environ.get(
        "TICKER_KITE_SAMPLES", Path(__file__).resolve().parent / "data" / "kite-samples"
    )
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


def create_database(name: str) -> str:
    """A fresh, migrated database; its URL."""
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    apply_migrations(url)
    return url


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def database_url(run_id: str) -> Iterator[str]:
    name = f"ticker_test_{run_id}"
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the session database, emptied after the test."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
        conn.execute("TRUNCATE subscriptions CASCADE")


# Db numbers this process holds; each is emptied and given back when its user is done.
_claimed_redis_dbs: set[int] = set()


def claim_redis_db() -> int:
    """An empty Redis db number no other session of this run uses."""
    for number in range(15, 0, -1):
        if number in _claimed_redis_dbs:
            continue
        client = redis.Redis.from_url(f"{TEST_REDIS_URL}/{number}")
        # A marker key claims the db; SET NX makes the claim atomic between sessions.
        if client.dbsize() == 0 and client.set("ticker-test:claimed", "1", nx=True):
            _claimed_redis_dbs.add(number)
            return number
    raise RuntimeError("no empty Redis db left between 1 and 15 for the tests")


def release_redis_db(number: int) -> None:
    """Empty a claimed db (its marker too) so a later stack can claim it."""
    redis.Redis.from_url(f"{TEST_REDIS_URL}/{number}").flushdb()
    _claimed_redis_dbs.discard(number)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    number = claim_redis_db()
    yield f"{TEST_REDIS_URL}/{number}"
    release_redis_db(number)


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, run_id: str) -> Settings:
    """Settings of this test session: its own database, Redis db and channels."""
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        events_channel=f"test:{run_id}:events",
        ticks_channel=f"test:{run_id}:ticks",
        events_stream=f"test:{run_id}:events:stream",
        key_prefix=f"test:{run_id}:",
        account_queue_prefix=f"test.{run_id}.account.",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List what the tests measured (their `record_property` figures) after the run.

    The README's fault table and the closing notes quote these, so every run shows them.
    """
    measured = [(report.nodeid.split("::", 1)[-1], name, value)
                for report in terminalreporter.stats.get("passed", [])
                for name, value in report.user_properties]
    if not measured:
        return
    terminalreporter.section("figures measured")
    for test, name, value in measured:
        terminalreporter.write_line(f"{test}: {name} = {value}")

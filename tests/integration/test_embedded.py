"""The runner's fallback servers: started only when nothing answers, stopped after."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from tests.conftest import free_port
from ticker.embedded import address_answers, ensure_postgres, ensure_redis
from ticker.supervisor import LineRelay


@pytest.fixture
def var_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are private to root, and a root test
    # runs the embedded PostgreSQL as another account that must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="ticker-embedded-"))
    folder.chmod(0o755)
    try:
        yield folder / "var"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _children_named(name: str) -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == name]


def test_ensure_redis_starts_redis_server_where_nothing_answers_and_stops_it(
    var_dir, caplog
):
    caplog.set_level(logging.INFO, logger="ticker.embedded")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/2"
    output = io.StringIO()

    with ensure_redis(url, var_dir, LineRelay(output)) as effective_url:
        client = redis.Redis.from_url(effective_url)
        assert client.ping()
        client.close()
        servers = _children_named("redis-server")
        assert len(servers) == 1

    assert effective_url == url
    assert not address_answers("127.0.0.1", port)
    assert not servers[0].is_running()
    assert "starting an embedded redis-server" in caplog.text
    assert "redis " in output.getvalue()  # its output was relayed under its name


def test_ensure_redis_uses_the_server_that_answers(var_dir):
    url = "redis://127.0.0.1:6379/0"

    with ensure_redis(url, var_dir, LineRelay(io.StringIO())) as effective_url:
        servers = _children_named("redis-server")

    assert effective_url == url
    assert servers == []
    assert not var_dir.exists()


def test_ensure_postgres_starts_one_with_the_database_and_stops_it(var_dir):
    port = free_port()
    database = f"ticker_embedded_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@127.0.0.1:{port}/{database}"

    with (
        ensure_postgres(url, var_dir, LineRelay(io.StringIO())) as effective_url,
        psycopg.connect(effective_url) as conn,
    ):
        row = conn.execute("SELECT current_database()").fetchone()

    assert row == (database,)
    assert not address_answers("127.0.0.1", port)
    assert (var_dir / "postgres" / "PG_VERSION").exists()
    assert _children_named("postgres") == []
    if os.geteuid() == 0:
        assert (var_dir / "postgres").stat().st_uid != 0

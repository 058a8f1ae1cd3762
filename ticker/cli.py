"""The `ticker` command: one entry for every process the service runs.

`ticker run` starts the whole stack on one machine; the other commands start one
process each, and are what docker-compose runs, so the two cannot drift.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

import click

from ticker.cli_client import OneLineUsageGroup, load_settings
from ticker.config import is_loopback_host
from ticker.lifeline import follow_runner
from ticker.logs import configure_logging

if TYPE_CHECKING:
    from ticker.accounts import Account
    from ticker.config import Settings


@click.group(cls=OneLineUsageGroup)
def main() -> None:
    """Kite market-data subscription service."""
    follow_runner()


@main.command()
def run() -> None:
    """Start the simulator, web API, one worker per account and Flower."""
    from ticker.runner import run_stack

    settings = load_settings()
    configure_logging(settings)
    sys.exit(run_stack(settings))


@main.command()
def sim() -> None:
    """Start the Kite simulator (WebSocket ticker and REST API)."""
    from ticker.simulator.server import serve

    settings = load_settings()
    configure_logging(settings)
    serve(settings)


@main.command()
@click.option("--workers", default=2, show_default=True, help="gunicorn processes")
def web(workers: int) -> None:
    """Start the HTTP API under gunicorn."""
    settings = load_settings()
    if settings.api_key is None and not is_loopback_host(settings.web_host):
        _refuse(f"the API would listen on {settings.web_host} with no API key: set "
                "TICKER_API_KEY, or TICKER_WEB_HOST=127.0.0.1")
    _exec(
        "gunicorn",
        "--bind", f"{settings.web_host}:{settings.web_port}",
        "--workers", str(workers),
        "--access-logfile", "-",
        # gunicorn's own lines in TICKER_LOG_FORMAT too (they bypass the root logger).
        "--logger-class", "ticker.gunicorn_logging.GunicornLogger",
        "--graceful-timeout", "5",
        # Unused here, and its default path is shared by every stack on the host.
        "--no-control-socket",
        "web.wsgi:app",
    )


@main.command()
@click.option("--account", "account_id", required=True, help="account id to serve")
def worker(account_id: str) -> None:
    """Start the socket worker of one account: the only consumer of its queue."""
    settings = load_settings()
    from ticker.accounts import load_accounts
    from ticker.errors import TickerError

    try:
        account = load_accounts(settings.accounts_file).get(account_id)
    except TickerError as exc:
        _refuse(f"{exc}; fix the accounts file (`ticker config check`) or --account")
    missing = _missing_access_token(settings, account)
    if missing:
        _refuse(f"{missing}, or store one with `ticker token set {account_id}`")
    os.environ["TICKER_WORKER_ACCOUNT"] = account_id
    _exec(
        "celery", "-A", "tasks.app", "worker",
        "--pool", "threads", "--concurrency", "1",
        "--queues", settings.account_queue(account_id),
        "--hostname", f"account-{account_id}@%h",
        "--loglevel", settings.log_level,
        "--without-mingle", "--without-gossip",
    )


@main.command(name="backfill-worker")
@click.option("--concurrency", default=2, show_default=True, help="threads fetching at once")
def backfill_worker(concurrency: int) -> None:
    """Start the backfill worker: historical candles, away from the socket workers."""
    settings = load_settings()
    _exec(
        "celery", "-A", "tasks.app", "worker",
        "--pool", "threads", "--concurrency", str(concurrency),
        "--queues", settings.backfill_queue,
        "--hostname", "backfill@%h",
        "--loglevel", settings.log_level,
        "--without-mingle", "--without-gossip",
    )


@main.command()
def beat() -> None:
    """Start Celery beat: the periodic gap fill of every active subscription."""
    settings = load_settings()
    settings.beat_schedule_file.parent.mkdir(parents=True, exist_ok=True)
    _exec(
        "celery", "-A", "tasks.app", "beat",
        "--schedule", str(settings.beat_schedule_file),
        "--loglevel", settings.log_level,
    )


@main.command()
def flower() -> None:
    """Start Flower, the Celery monitor, for every account's worker and queue."""
    settings = load_settings()
    if settings.flower_basic_auth is not None:
        # Through the environment, which Flower reads, not argv, which `ps` shows.
        os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    elif is_loopback_host(settings.flower_host):
        # Flower 2.x refuses its HTTP API without authentication; on loopback only
        # this machine's users reach it, so the API is opened there.
        os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
    else:
        _refuse(f"Flower would listen on {settings.flower_host} with no login: set "
                "TICKER_FLOWER_BASIC_AUTH=user:password, or TICKER_FLOWER_HOST=127.0.0.1")
    _exec(
        "celery", "-A", "tasks.flower_app", "flower",
        f"--address={settings.flower_host}", f"--port={settings.flower_port}",
    )


@main.command()
def migrate() -> None:
    """Create the database if needed and apply every pending migration."""
    from ticker.storage.migrations import apply_migrations

    settings = load_settings()
    configure_logging(settings)
    apply_migrations(settings.database_url)


def _add_operator_commands() -> None:
    """The commands an operator runs against a running service (ticker/cli_*.py)."""
    from ticker import cli_admin, cli_config, cli_ops, cli_streams

    for module in (cli_ops, cli_streams, cli_admin, cli_config):
        for command in module.COMMANDS:
            main.add_command(command)


_add_operator_commands()


def _missing_access_token(settings: Settings, account: Account) -> str | None:
    """Why the worker would find no token to dial with, or None when it will."""
    import redis

    from ticker.access_tokens import effective_access_token
    from ticker.errors import ConfigInvalid

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
    try:
        effective_access_token(client, settings.key_prefix, account)
    except ConfigInvalid as exc:
        return str(exc)
    except redis.RedisError:
        return None  # unknown until Redis answers: the worker waits for it and tells
    finally:
        client.close()
    return None


def _refuse(message: str) -> NoReturn:
    click.echo(f"ticker: {message}", err=True)
    sys.exit(2)


def _exec(*argv: str) -> None:
    """Replace this process, so signals reach the real server directly."""
    bin_dir = os.path.dirname(sys.executable)
    program = os.path.join(bin_dir, argv[0])
    if not os.path.exists(program):
        program = argv[0]
    os.execvp(program, [program, *argv[1:]])

"""Operator commands that act behind the API: `ticker backfill` and `ticker token`.

`backfill` sends the very Celery task beat's gap fill sends. `token set` rotates an
account's Kite access token while its worker runs (see `ticker.access_tokens`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson
import redis
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_exceptions
from kombu.exceptions import OperationalError

from ticker import access_tokens
from ticker.accounts import (
    ACCESS_TOKEN_PATTERN,
    ACCESS_TOKEN_RULE,
    Account,
    load_accounts,
)
from ticker.backfill import INTERVALS
from ticker.cli_client import (
    TOKEN,
    ApiClient,
    api_option,
    echo_json,
    guarded,
    load_settings,
    refused,
    unreachable,
    usage,
)
from ticker.config import Settings
from ticker.errors import TickerError

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)

# Kite access tokens are 32 alphanumerics; anything printable without spaces passes,
# so another broker's format is not refused, while a pasted line break or a
# `Bearer ...` prefix is.
# Sending to an unreachable broker fails after these, not after kombu's minutes.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
WAIT_POLL_S = 0.5


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=5
    )


def wait_option(help_text: str) -> Callable[[F], F]:
    """`--wait SECONDS`: how long a command waits for the outcome it started."""
    return click.option("--wait", "wait_s", type=click.FloatRange(min=0.1),
                        default=None, metavar="SECONDS", help=help_text)


@click.command()
@click.argument("token", type=TOKEN)
@click.option(
    "--interval",
    type=click.Choice(INTERVALS),
    default=None,
    help="candle interval [default: TICKER_BACKFILL_INTERVAL]",
)
@wait_option("wait this long for backfill_completed (exit 1 on backfill_failed)")
@api_option
@click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON")
@guarded
def backfill(
    token: int,
    interval: str | None,
    wait_s: float | None,
    api_url: str | None,
    as_json: bool,
) -> None:
    """Queue a backfill of a subscribed token now, as beat's gap fill does."""
    settings = load_settings()
    interval = interval or settings.backfill_interval
    # The backfill worker skips a token nobody subscribes; say so here instead.
    subscription = ApiClient.from_settings(settings, api_url).get(
        f"/subscriptions/{token}"
    )
    if subscription.get("status") == "removed":
        raise refused(
            f"token {token} is no longer subscribed; `ticker subscribe` it first"
        )

    listener = (
        _listen(settings, settings.events_channel) if wait_s is not None else None
    )
    task_id = _send_backfill(settings, token, interval)
    outcome: dict[str, Any] = {
        "instrument_token": token,
        "interval": interval,
        "task_id": task_id,
        "status": "queued",
    }
    if listener is not None:
        event = _wait_for_backfill(listener, token, interval, wait_s or 0.0)
        outcome.update(status=event["event_type"], metadata=event["metadata"])
    if as_json:
        echo_json(outcome)
    elif listener is None:
        click.echo(
            f"{token}: {interval} backfill queued on {settings.backfill_queue} "
            f"(task {task_id})"
        )
    else:
        meta = outcome["metadata"]
        click.echo(
            f"{token}: {interval} backfill {outcome['status']}: "
            + (
                f"{meta.get('candles_stored')} candles stored of "
                f"{meta.get('candles_received')} received"
                if outcome["status"] == "backfill_completed"
                else str(meta.get("reason"))
            )
        )
    if outcome["status"] == "backfill_failed":
        sys.exit(1)


def _send_backfill(settings: Settings, token: int, interval: str) -> str:
    # A bare app: sending needs none of `tasks.app`'s worker side (sockets, Twisted).
    from celery import Celery

    app = Celery("ticker")
    app.config_from_object("celeryconfig")
    task_id = str(uuid.uuid4())
    try:
        app.send_task(
            "ticker.backfill",
            args=[token],
            kwargs={"interval": interval},
            queue=settings.backfill_queue,
            task_id=task_id,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
    except OperationalError as exc:
        raise unreachable(
            f"cannot reach the Celery broker to queue the backfill: {exc}; "
            "is Redis (CELERY_BROKER_URL or REDIS_URL) up?"
        ) from None
    log.info("backfill sent token=%s interval=%s task=%s", token, interval, task_id)
    return task_id


def _listen(settings: Settings, channel: str) -> Any:
    pubsub = _redis(settings).pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(channel)
        pubsub.get_message(timeout=1)  # the confirmation: nothing after it is missed
    except redis.RedisError as exc:
        raise unreachable(
            f"cannot reach Redis at REDIS_URL to wait for events: {exc}"
        ) from None
    return pubsub


def _wait_for_backfill(
    pubsub: Any, token: int, interval: str, wait_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=WAIT_POLL_S)
            if message is None or message["type"] != "message":
                continue
            event = orjson.loads(message["data"])
            if (
                event.get("instrument_token") == token
                and event.get("event_type") in ("backfill_completed", "backfill_failed")
                and event.get("metadata", {}).get("interval", interval) == interval
            ):
                return event  # type: ignore[no-any-return]
    finally:
        pubsub.close()
    raise refused(
        f"no backfill outcome for token {token} within {wait_s:g} s; is the "
        "backfill worker running? (`ticker backfill-worker`, Flower shows its queue)"
    )


@click.group()
def token() -> None:
    """Rotate an account's Kite access token while its worker runs."""


@token.command(name="set")
@click.argument("account_id", metavar="ACCOUNT")
@click.option(
    "--token-env",
    metavar="VAR",
    default=None,
    help="read the token from this environment variable [default: stdin]",
)
@wait_option("wait this long for the account's sockets to be healthy (exit 1 if not)")
@click.option(
    "--no-check",
    is_flag=True,
    help="store the token without asking Kite whether it accepts it",
)
@api_option
@guarded
def set_token(
    account_id: str, token_env: str | None, wait_s: float | None, no_check: bool,
    api_url: str | None,
) -> None:
    """Give ACCOUNT's worker a new access token, read from stdin or --token-env.

    Never from the command line, which `ps` shows. Kite is asked first (the token's
    user profile), and a token it refuses is not stored. The worker picks it up within a
    heartbeat: connections Kite refused reconnect with it at once; healthy ones
    keep streaming and use it when they next reconnect. It wins over the accounts
    file until `ticker token clear ACCOUNT`.
    """
    settings = load_settings()
    account = _known_account(settings, account_id)
    access_token = _read_token(token_env, account_id)
    if not no_check:
        _check_with_kite(settings, account, access_token)
    try:
        access_tokens.store_override(
            _redis(settings), settings.key_prefix, account_id, access_token
        )
    except redis.RedisError as exc:
        raise unreachable(
            f"cannot reach Redis at REDIS_URL to store the token: {exc}; "
            "nothing was changed"
        ) from None
    log.info("access token stored account=%s", account_id)
    click.echo(
        f"{account_id}: new access token stored; its worker uses it within "
        f"{settings.worker_heartbeat_s:g} s (refused connections reconnect, "
        "healthy ones keep streaming)"
    )
    if wait_s is not None:
        _wait_healthy(ApiClient.from_settings(settings, api_url), account_id, wait_s)


@token.command(name="clear")
@click.argument("account_id", metavar="ACCOUNT")
@guarded
def clear_token(account_id: str) -> None:
    """Drop ACCOUNT's rotated token; the file's applies from the next refusal."""
    settings = load_settings()
    _known_account(settings, account_id)
    try:
        removed = access_tokens.clear_override(
            _redis(settings), settings.key_prefix, account_id
        )
    except redis.RedisError as exc:
        raise unreachable(f"cannot reach Redis at REDIS_URL: {exc}") from None
    click.echo(
        f"{account_id}: "
        + (
            "rotated token removed; the accounts file's applies"
            if removed
            else "no rotated token was set"
        )
    )


def _check_with_kite(settings: Settings, account: Account, access_token: str) -> None:
    """Ask Kite for the token's user profile: a healthy socket would not tell.

    A live socket keeps streaming whatever its token, so without this a wrong token
    would show only at the next reconnect, during market hours.
    """
    kite = KiteConnect(account.api_key, access_token=access_token,
                       root=settings.kite_rest_root, timeout=10)
    try:
        kite.profile()
    except (kite_exceptions.TokenException, kite_exceptions.PermissionException) as exc:
        raise refused(
            f"Kite refuses this token for {account.id} ({type(exc).__name__}: {exc}); "
            "nothing was changed: log in again for the day's token"
        ) from None
    except (kite_exceptions.KiteException, requests.RequestException) as exc:
        raise unreachable(
            f"cannot ask Kite at {settings.kite_rest_root} about the token "
            f"({type(exc).__name__}); nothing was changed (--no-check stores it "
            "without asking)"
        ) from None


def _known_account(settings: Settings, account_id: str) -> Account:
    try:
        return load_accounts(settings.accounts_file).get(account_id)
    except TickerError as exc:
        raise usage(
            f"{exc} (`ticker config check` shows the file's problems)"
        ) from None


def _read_token(token_env: str | None, account_id: str) -> str:
    if token_env is not None:
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise usage(
                f"environment variable {token_env} holds no token; export it first"
            )
    elif sys.stdin.isatty():
        value = click.prompt(
            f"access token for {account_id}", hide_input=True, err=True
        ).strip()
    else:
        value = sys.stdin.read().strip()
    if not ACCESS_TOKEN_PATTERN.match(value):
        # The value itself is never echoed: it may be a secret with a typo.
        raise usage(
            f"the access token must be {ACCESS_TOKEN_RULE}; pipe it in: "
            f'`printf %s "$TOKEN" | ticker token set {account_id}`'
        )
    return value


def _wait_healthy(client: ApiClient, account_id: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    state = "unknown"
    while time.monotonic() < deadline:
        for account in client.get("/accounts")["accounts"]:
            if account["account_id"] == account_id:
                state = account["socket_state"]
        if state == "ok":
            click.echo(f"{account_id}: sockets healthy")
            return
        time.sleep(WAIT_POLL_S)
    hint = (
        "Kite refuses this token too; log in again for a fresh one"
        if state == "auth_failed"
        else "see `ticker accounts` and the worker's log"
    )
    raise refused(f"{account_id} still {state} after {wait_s:g} s: {hint}")


COMMANDS = [backfill, token]

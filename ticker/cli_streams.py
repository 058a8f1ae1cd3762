"""Operator commands that watch the service: `ticker events` and `ticker ticks`.

Events are read through the API's replay (`GET /events?after=`), which pages over
the events stream, so following needs no Redis access and misses nothing between
polls. Ticks are kept nowhere, so `ticker ticks` listens on the Redis ticks channel.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

import click
import orjson
import redis

from ticker.cli_client import (
    TOKEN,
    ApiClient,
    api_option,
    guarded,
    load_settings,
    refused,
    unreachable,
)
from ticker.ticks import IST

log = logging.getLogger(__name__)

EVENTS_PAGE = 1000
# How long one wait for a pub/sub message blocks before the deadline is checked.
TICK_POLL_S = 0.5


def _event_line(event: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(event["timestamp"], IST).strftime("%H:%M:%S.%f")[:-3]
    meta = event.get("metadata") or {}
    details = " ".join(
        f"{k}={v}" for k, v in meta.items() if k not in ("tradingsymbol", "segment")
    )
    return (
        f"{at} {event['stream_id']} {event['event_type']} "
        f"{event['instrument_token']} {meta.get('tradingsymbol', '')} "
        f"seq={event.get('sequence')} {details}"
    ).rstrip()


@click.command()
@click.option(
    "--after",
    default="0",
    show_default=True,
    metavar="STREAM_ID",
    help="start after this stream_id (0: the oldest event kept)",
)
@click.option(
    "--follow", "-f", is_flag=True, help="keep printing new events until Ctrl-C"
)
@click.option("--token", "only_token", type=TOKEN, default=None, help="only this token's")
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.05),
    help="seconds between polls when following",
)
@api_option
@click.option("--json", "as_json", is_flag=True, help="one JSON event per line")
@guarded
def events(
    after: str,
    follow: bool,
    only_token: int | None,
    interval: float,
    api_url: str | None,
    as_json: bool,
) -> None:
    """Print events after --after, then (with --follow) new ones as they come."""
    client = ApiClient.from_settings(load_settings(), api_url)
    while True:
        page = client.get("/events", after=after, limit=EVENTS_PAGE)
        if page.get("gap"):
            click.echo(
                f"ticker: events after {after} were trimmed from the stream; "
                "read `ticker ls` for the current state",
                err=True,
            )
        for event in page["events"]:
            if only_token is None or event["instrument_token"] == only_token:
                click.echo(json.dumps(event) if as_json else _event_line(event))
        after = page["last_id"]
        if page["count"] >= EVENTS_PAGE:
            continue  # more are waiting: no pause
        if not follow:
            return
        time.sleep(interval)


def _tick_line(tick: dict[str, Any]) -> str:
    fields = [
        str(tick["instrument_token"]),
        tick.get("mode", ""),
        f"last_price={tick.get('last_price')}",
    ]
    for name in ("volume_traded", "oi", "exchange_timestamp"):
        if tick.get(name) is not None:
            fields.append(f"{name}={tick[name]}")
    return " ".join(fields)


@click.command()
@click.argument("token", type=TOKEN)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="stop after this many ticks",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=None,
    help="give up (exit 1) when no tick came for this many seconds",
)
@click.option(
    "--json", "as_json", is_flag=True, help="one JSON tick per line, as published"
)
@guarded
def ticks(
    token: int, count: int | None, timeout_s: float | None, as_json: bool
) -> None:
    """Print one token's ticks from the Redis ticks channel until Ctrl-C or --count."""
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(settings.ticks_channel)
    except redis.RedisError as exc:
        raise unreachable(
            f"cannot reach Redis at REDIS_URL to listen for ticks: {exc}; "
            "is it running?"
        ) from None
    seen = 0
    last_at = time.monotonic()
    try:
        while count is None or seen < count:
            if timeout_s is not None and time.monotonic() - last_at > timeout_s:
                raise refused(
                    f"no tick for token {token} within {timeout_s:g} s; is it "
                    "subscribed and active? (`ticker ls`)"
                )
            message = pubsub.get_message(timeout=TICK_POLL_S)
            if message is None or message["type"] != "message":
                continue
            tick = orjson.loads(message["data"])
            if tick.get("instrument_token") != token:
                continue
            seen += 1
            last_at = time.monotonic()
            click.echo(message["data"].decode() if as_json else _tick_line(tick))
    except redis.RedisError as exc:
        raise unreachable(f"lost Redis while listening for ticks: {exc}") from None
    finally:
        pubsub.close()


COMMANDS = [events, ticks]

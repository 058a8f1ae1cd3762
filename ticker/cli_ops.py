"""Operator commands over the HTTP API: subscribe, unsubscribe, ls and accounts."""

from __future__ import annotations

from typing import Any

import click

from ticker.cli_client import (
    TOKEN,
    ApiClient,
    api_option,
    echo_json,
    echo_table,
    guarded,
    json_option,
    load_settings,
)

MODES = click.Choice(["ltp", "quote", "full"], case_sensitive=False)
STATUSES = click.Choice(
    ["pending", "active", "removing", "removed"], case_sensitive=False
)


def _client(api_url: str | None) -> ApiClient:
    return ApiClient.from_settings(load_settings(), api_url)


def _instrument(ref: str, exchange: str) -> dict[str, Any]:
    """A token names itself; anything else is a tradingsymbol on `exchange`."""
    # ASCII digits only: str.isdigit also takes '²', which int() refuses.
    if ref.isascii() and ref.isdigit():
        return {"instrument_token": TOKEN.convert(ref, None, None)}
    return {"tradingsymbol": ref.upper(), "exchange": exchange.upper()}


def _subscription_row(s: dict[str, Any]) -> list[Any]:
    requesters = ", ".join(
        f"{r['client_id']}:{r['requested_mode']}" for r in s.get("requesters") or []
    )
    return [
        s["instrument_token"],
        s.get("tradingsymbol"),
        s.get("exchange"),
        s.get("requested_mode"),
        s.get("applied_mode"),
        s.get("account_id"),
        s.get("status"),
        requesters or None,
        s.get("status_reason"),
    ]


SUBSCRIPTION_HEADERS = [
    "token",
    "tradingsymbol",
    "exchange",
    "mode",
    "applied",
    "account",
    "status",
    "requesters",
    "reason",
]


@click.command()
@click.argument("instrument", metavar="TOKEN|TRADINGSYMBOL")
@click.option(
    "--exchange", default="NFO", show_default=True, help="exchange of a TRADINGSYMBOL"
)
@click.option(
    "--mode",
    type=MODES,
    default=None,
    help="streaming mode [default: keep a live one's, QUOTE for a new one]",
)
@click.option(
    "--client-id", default=None, help="the requester's name [default: default]"
)
@api_option
@json_option
@guarded
def subscribe(
    instrument: str,
    exchange: str,
    mode: str | None,
    client_id: str | None,
    api_url: str | None,
    as_json: bool,
) -> None:
    """Start streaming an instrument (by token, or by tradingsymbol on --exchange)."""
    body = _instrument(instrument, exchange)
    if mode is not None:
        body["requested_mode"] = mode.upper()
    if client_id is not None:
        body["client_id"] = client_id
    answer = _client(api_url).post("/subscriptions", body)
    if as_json:
        echo_json(answer)
        return
    click.echo(
        f"{answer['instrument_token']} {answer.get('tradingsymbol') or ''} "
        f"{answer.get('requested_mode')} on {answer.get('account_id')}: "
        f"{answer.get('status')}"
    )


@click.command()
@click.argument("token", type=TOKEN)
@click.option(
    "--client-id", default=None, help="the requester leaving [default: default]"
)
@api_option
@json_option
@guarded
def unsubscribe(
    token: int, client_id: str | None, api_url: str | None, as_json: bool
) -> None:
    """Stop one requester's subscription; the token stops once no requester holds it."""
    answer = _client(api_url).delete(f"/subscriptions/{token}", client_id=client_id)
    if as_json:
        echo_json(answer)
        return
    click.echo(f"{token} {answer.get('tradingsymbol') or ''}: {answer.get('status')}")


@click.command(name="ls")
@click.option("--account", default=None, help="only this account's")
@click.option(
    "--status",
    type=STATUSES,
    default=None,
    help="only this status [default: pending, active and removing]",
)
@api_option
@json_option
@guarded
def list_subscriptions(
    account: str | None, status: str | None, api_url: str | None, as_json: bool
) -> None:
    """List subscriptions."""
    answer = _client(api_url).get("/subscriptions", usage_fields=("account",),
                                   account=account, status=status)
    if as_json:
        echo_json(answer)
        return
    echo_table(
        (_subscription_row(s) for s in answer["subscriptions"]), SUBSCRIPTION_HEADERS
    )


@click.command()
@api_option
@json_option
@guarded
def accounts(api_url: str | None, as_json: bool) -> None:
    """Each account's capacity, use, worker and socket state."""
    answer = _client(api_url).get("/accounts")
    if as_json:
        echo_json(answer)
        return
    echo_table(
        (
            [
                a["account_id"],
                a["socket_state"],
                "up" if a["worker_alive"] else "down",
                a["used"],
                a["capacity"],
                a["free"],
                len(a.get("connections") or []),
            ]
            for a in answer["accounts"]
        ),
        ["account", "sockets", "worker", "used", "capacity", "free", "connections"],
    )


COMMANDS = [subscribe, unsubscribe, list_subscriptions, accounts]

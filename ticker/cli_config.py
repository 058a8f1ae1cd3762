"""`ticker config check`: the accounts file validated, each problem at its line.

`load_accounts` names the field at fault; an operator editing YAML also wants the
line, so the file is composed once more into nodes, which remember where they were.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from ticker.accounts import AccountsFile
from ticker.cli_client import (
    EXIT_USAGE,
    echo_json,
    guarded,
    json_option,
    load_settings,
    usage,
)


def _line_of(root: yaml.Node | None, loc: Sequence[Any]) -> int:
    """The 1-based line of the deepest node `loc` reaches (a missing one's parent)."""
    node, line = root, 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def check_accounts_file(
    path: Path, environ: dict[str, str] | None = None
) -> tuple[list[str], list[str], AccountsFile | None]:
    """Errors and warnings of an accounts file, each `file:line: field: what`."""
    environ = dict(os.environ) if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [f"{path}: cannot read it: {exc.strerror or exc}"], [], None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        return [f"{path}:{line}: not UTF-8 text (byte {exc.start}); save it as UTF-8"], [], None
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        return (
            [f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"],
            [],
            None,
        )
    try:
        parsed = AccountsFile.model_validate(raw)
    except ValidationError as exc:
        errors = [
            f"{path}:{_line_of(root, err['loc'])}: "
            f"{'.'.join(str(p) for p in err['loc']) or '<file>'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        return errors, [], None

    warnings = []
    api_keys: dict[str, str] = {}
    for index, account in enumerate(parsed.accounts):
        if account.access_token_env and not environ.get(account.access_token_env):
            line = _line_of(root, ["accounts", index, "access_token_env"])
            warnings.append(
                f"{path}:{line}: accounts.{index}.access_token_env: "
                f"{account.access_token_env} is not set here; export it where the "
                f"workers run (or `ticker token set {account.id}`)"
            )
        if account.api_key in api_keys:
            line = _line_of(root, ["accounts", index, "api_key"])
            warnings.append(
                f"{path}:{line}: accounts.{index}.api_key: also used by account "
                f"{api_keys[account.api_key]!r}; Kite counts connections per api_key"
            )
        api_keys.setdefault(account.api_key, account.id)
    return [], warnings, parsed


@click.group()
def config() -> None:
    """Check the service's configuration."""


@config.command()
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="accounts file [default: TICKER_ACCOUNTS_FILE]",
)
@json_option
@guarded
def check(path: Path | None, as_json: bool) -> None:
    """Validate the accounts file; exit 2 naming each bad line and field."""
    path = path or load_settings().accounts_file
    errors, warnings, parsed = check_accounts_file(path)
    if as_json:
        echo_json({
            "file": str(path),
            "ok": not errors,
            "accounts": [a.id for a in parsed.accounts] if parsed else [],
            "errors": errors,
            "warnings": warnings,
        })
        if errors:
            raise SystemExit(EXIT_USAGE)
        return
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if errors:
        for error in errors[:-1]:
            click.echo(f"ticker: {error}", err=True)
        raise usage(
            f"{errors[-1]} (fix the file, then run `ticker config check` again)"
        )
    assert parsed is not None
    ids = ", ".join(a.id for a in parsed.accounts)
    count = len(parsed.accounts)
    click.echo(f"{path}: ok, {count} account{'' if count == 1 else 's'} ({ids})")


COMMANDS = [config]

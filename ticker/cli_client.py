"""What the operator commands share: the API client, exit codes and output.

Exit codes are a contract scripts rely on:

    0  done
    1  the service said no (404, 409, 503, ...), or what was awaited never came
    2  usage or configuration error (click's own usage errors are 2 as well)
    3  the service (API, Redis or broker) could not be reached

Every failure is one line on stderr that says what to do; never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import IO, Any, TypeVar

import click
import redis
import requests
from pydantic import ValidationError
from pydantic_settings import SettingsError

from ticker.config import Settings, is_loopback_host
from ticker.subscriptions import MAX_INSTRUMENT_TOKEN

log = logging.getLogger(__name__)

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

REQUEST_TIMEOUT_S = 10.0

F = TypeVar("F", bound=Callable[..., Any])


class CliFailure(click.ClickException):
    """A failure shown as one `ticker: ...` line; subclasses set the exit code."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"ticker: {self.format_message()}", err=True)


class Refused(CliFailure):
    """The service answered no, or what was awaited never came."""

    exit_code = EXIT_REFUSED


class UsageError(CliFailure):
    """The command line, the environment or the accounts file is at fault."""

    exit_code = EXIT_USAGE


class Unreachable(CliFailure):
    """The API, Redis or the broker did not answer."""

    exit_code = EXIT_UNREACHABLE


class InstrumentToken(click.ParamType):
    """A Kite instrument token: a whole number from 1 to 2**32 - 1."""

    name = "token"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
            number = int(value)
        else:
            number = 0  # not a whole number in ASCII digits (str.isdigit takes '²')
        if not 1 <= number <= MAX_INSTRUMENT_TOKEN:
            self.fail(f"{value!r} is not an instrument token: give a whole number from 1 "
                      f"to {MAX_INSTRUMENT_TOKEN}", param, ctx)
        return number


TOKEN = InstrumentToken()


class OneLineUsageGroup(click.Group):
    """click's usage errors as one `ticker: ...` line, like every other failure."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)


@contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # `ticker` alone: the help is the answer
    except click.UsageError as exc:
        message = exc.format_message().rstrip(".")
        if isinstance(exc, click.NoSuchOption) and re.fullmatch(r"-\d+", exc.option_name):
            # A negative number reads as an option to click.
            message = (f"{exc.option_name} is not an instrument token: give a whole "
                       f"number from 1 to {MAX_INSTRUMENT_TOKEN}")
        elif isinstance(exc, click.NoSuchOption) and isinstance(
                exc.ctx and exc.ctx.command, click.Group):
            message += "; options go after the command, as in `ticker ls --json`"
        command = exc.ctx.command_path if exc.ctx else "ticker"
        raise usage(f"{message} (see `{command} --help`)") from None


def refused(message: str) -> CliFailure:
    return Refused(message)


def usage(message: str) -> CliFailure:
    return UsageError(message)


def unreachable(message: str) -> CliFailure:
    return Unreachable(message)


def load_settings() -> Settings:
    """The service's settings, or exit 2 naming the variable at fault."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_setting_problem(e) for e in exc.errors())
        raise usage(f"the environment holds invalid settings: {problems}") from None
    except SettingsError as exc:
        # pydantic-settings could not even read a value, such as JSON for a dict.
        raise usage(f"the environment holds invalid settings: {exc}; settings that "
                    "take a mapping are JSON objects") from None


def _setting_problem(error: Any) -> str:
    reason = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return reason  # a rule between settings; its message names them
    field = str(error["loc"][0])
    # A field read under an alias (REDIS_URL) is reported under that name already.
    variable = Settings.variable_for(field) if field in Settings.model_fields else field
    return f"{variable}: {reason}"


def default_api_url(settings: Settings) -> str:
    # A server bound to every interface is reached on loopback from here.
    host = settings.web_host
    if host in ("0.0.0.0", "::") or not host:
        host = "127.0.0.1"
    elif ":" in host and not is_loopback_host(host):
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}"


def api_option(command: F) -> F:
    """`--api URL`, defaulting to where TICKER_WEB_HOST/PORT put the API."""
    return click.option(
        "--api",
        "api_url",
        default=None,
        metavar="URL",
        help="API base URL [default: http://TICKER_WEB_HOST:TICKER_WEB_PORT]",
    )(command)


def json_option(command: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="print JSON instead of a table"
    )(command)


def guarded(command: F) -> F:
    """Every way a command can end, mapped to one line and an exit code.

    Ctrl-C ends it quietly with 0 (following a stream is ended that way); a lost
    Redis is "unreachable"; anything unforeseen is one line too, never a traceback.
    """

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise SystemExit(0) from None
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as Ctrl-C does. Later
            # writes, the interpreter's last flush included, go nowhere.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
        except (click.ClickException, click.exceptions.Exit, SystemExit):
            raise
        except redis.RedisError as exc:
            raise unreachable(
                f"lost Redis (REDIS_URL): {exc}; is it running?"
            ) from None
        except Exception as exc:
            log.debug("command failed", exc_info=True)
            raise refused(
                f"unexpected {type(exc).__name__}: {exc}; if the service is healthy "
                "(`ticker accounts`), this is a bug worth reporting"
            ) from None

    return run  # type: ignore[return-value]


class ApiClient:
    """The HTTP API as the operator commands use it: one call, one answer or exit."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        if api_key:
            self._session.headers["X-API-Key"] = api_key

    @classmethod
    def from_settings(cls, settings: Settings, api_url: str | None) -> ApiClient:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return cls(api_url or default_api_url(settings), key)

    def get(self, path: str, usage_fields: tuple[str, ...] = (), **params: Any) -> Any:
        """GET with `params`; a 422 naming one of `usage_fields` exits 2, not 1.

        Those are the fields the operator typed as options (say, an unknown
        account), so the command line is at fault rather than the service.
        """
        return self._call(
            "GET", path, params={k: v for k, v in params.items() if v is not None},
            usage_fields=usage_fields,
        )

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self._call(
            "DELETE", path, params={k: v for k, v in params.items() if v is not None}
        )

    def _call(self, method: str, path: str, usage_fields: tuple[str, ...] = (),
              **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            answer = self._session.request(
                method, url, timeout=REQUEST_TIMEOUT_S, **kwargs
            )
        except requests.ConnectionError:
            raise unreachable(
                f"cannot reach the API at {self.base_url}; is `ticker web` running? "
                "(--api URL points elsewhere)"
            ) from None
        except requests.Timeout:
            raise unreachable(
                f"the API at {self.base_url} did not answer {method} {path} within "
                f"{REQUEST_TIMEOUT_S:.0f} s; check `curl {self.base_url}/health`"
            ) from None
        except requests.RequestException as exc:
            raise usage(f"cannot call {url}: {exc}; check --api") from None
        log.debug(
            "api answered method=%s path=%s status=%d", method, path, answer.status_code
        )
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.ok and body is not None:
            return body
        message = _describe_refusal(method, path, answer.status_code, body)
        if answer.status_code == 422 and _error_field(body) in usage_fields:
            raise usage(message)
        raise refused(message)


def _error_field(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("field") if isinstance(error, dict) else None


def _describe_refusal(method: str, path: str, status: int, body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return (
            f"{method} {path} answered {status} without a JSON error; "
            "is --api the ticker API?"
        )
    code, message = error.get("code", "error"), error.get("message", "")
    hint = {
        "unauthorized": "; set TICKER_API_KEY to the service's key",
        "no_live_worker": "; start the account workers (`ticker worker --account ID`)",
        "capacity_exhausted": "; free instruments or add an account",
    }.get(code, "")
    return f"the service said no ({status} {code}): {message}{hint}"


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def echo_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    # Imported here: only commands that draw tables pay for it.
    from tabulate import tabulate

    click.echo(
        tabulate(
            list(rows),
            headers=list(headers),
            tablefmt="simple",
            missingval="-",
            disable_numparse=True,
        )
    )

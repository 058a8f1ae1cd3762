"""Logging set-up for the service's entrypoints (never called by library code).

Every process logs one line a record: plain text on a terminal, or one JSON object
a line when `TICKER_LOG_FORMAT=json`, for a log shipper. In both, a filter lifts the
context the service's messages already carry as `key=value` (`account=`, `token=`,
`task=`, ...) into fields of the record, adds the Celery task id of the task being
run and the account of an account worker, and masks credentials. Only the JSON form
shows the fields; the text form already reads them in the message.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

import orjson
from pythonjsonlogger.json import JsonFormatter

from ticker.config import Settings
from ticker.supervisor import LineRelay

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# JSON records: these standard attributes, renamed below, plus every field the
# context filter or an `extra=` adds.
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}

# The account an account worker serves (set by `ticker worker`, read by its step).
WORKER_ACCOUNT_ENV = "TICKER_WORKER_ACCOUNT"

# Message keys lifted into fields, under the names the API and events use.
CONTEXT_FIELDS = {
    "account": "account_id",
    "token": "instrument_token",
    "task": "task_id",
    "connection": "connection",
    "mode": "mode",
    "client": "client_id",
}
_CONTEXT = re.compile(r"\b(" + "|".join(CONTEXT_FIELDS) + r")=([^\s,;]+)")
# A credential in a message (a URL's query, a key=value) is masked, whatever logged it.
_CREDENTIAL = re.compile(
    r"\b(\w*(?:access_token|secret|password))=([^\s&,;\"']+)", re.IGNORECASE
)
_SECRET_FIELD = re.compile(r"access_token|secret|password", re.IGNORECASE)
MASK = "[masked]"

_HANDLER_MARK = "_ticker_handler"


def _celery_task_id() -> Callable[[], str | None]:
    """A reader of the running Celery task's id; None outside a task or Celery."""
    try:
        from celery import current_task
    except ImportError:  # pragma: no cover (celery is a dependency)
        return lambda: None

    def task_id() -> str | None:
        # The task stack is per thread, so a threads-pool worker sees its own task.
        task = current_task._get_current_object()
        request = getattr(task, "request", None)
        return getattr(request, "id", None)

    return task_id


class ContextFilter(logging.Filter):
    """Adds `account_id`, `instrument_token`, `task_id`, ... to every record.

    Attached to handlers, so it sees records of every logger, libraries' too.
    """

    def __init__(self, account_id: str | None = None,
                 task_id: Callable[[], str | None] | None = None) -> None:
        super().__init__()
        self._account_id = account_id
        self._task_id = task_id or _celery_task_id()
        # Which process wrote the record; the runner names its children itself.
        self.service: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _CREDENTIAL.sub(lambda m: f"{m.group(1)}={MASK}", message)
        if masked != message:
            # Rendered once here, so every handler writes the masked text.
            record.msg, record.args = masked, None
        for key, value in _CONTEXT.findall(masked):
            field = CONTEXT_FIELDS[key]
            if value != "None" and not hasattr(record, field):
                setattr(record, field, int(value) if value.isdigit() else value)
        if not hasattr(record, "task_id"):
            task_id = self._task_id()
            if task_id is not None:
                record.task_id = task_id
        if self._account_id is not None and not hasattr(record, "account_id"):
            record.account_id = self._account_id
        if self.service is not None and not hasattr(record, "service"):
            record.service = self.service
        for name in list(vars(record)):
            if _SECRET_FIELD.search(name) and name not in {"msg", "args"}:
                setattr(record, name, MASK)
        return True


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` ("text" or "json")."""
    if log_format == "json":
        return JsonFormatter(JSON_FORMAT, rename_fields=JSON_RENAMED,
                             json_ensure_ascii=False)
    return logging.Formatter(LOG_FORMAT)


def make_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler with the configured format and the context filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(settings.log_format))
    handler.addFilter(ContextFilter(account_id=os.environ.get(WORKER_ACCOUNT_ENV)))
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> None:
    """Route every record through one handler of the configured format.

    Idempotent: a second call (gunicorn's app import after the CLI's) replaces the
    handler it installed instead of adding another.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    root.addHandler(make_handler(settings, stream))
    root.setLevel(settings.log_level.upper())
    # Python warnings (Celery's running-as-root one, say) would otherwise be
    # several raw lines on stderr in the middle of the JSON.
    logging.captureWarnings(settings.log_format == "json")


def name_this_process(service: str) -> None:
    """Records of this process carry `service`, as the runner's children's do."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, ContextFilter):
                found.service = service


def restyle_handlers(logger: logging.Logger, settings: Settings) -> None:
    """Give a library's own handlers (gunicorn's) the service's format and fields."""
    if settings.log_format != "json":
        return  # their plain text already reads like ours
    for handler in logger.handlers:
        handler.setFormatter(make_formatter(settings.log_format))
        handler.addFilter(ContextFilter(account_id=os.environ.get(WORKER_ACCOUNT_ENV)))


class JsonLineRelay(LineRelay):
    """The runner's relay when logs are JSON: every line one JSON object.

    A child's JSON record gets `service` (the child's name) instead of the text
    relay's `name |` prefix; a line that is not JSON (a banner, a server of our
    own like redis-server) is wrapped as the `message` of one.
    """

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._out = stream
        self._out_lock = threading.Lock()

    def write(self, name: str, line: str) -> None:
        record: Any = None
        if line.startswith("{"):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
        if not isinstance(record, dict):
            record = {"message": line}
        record.setdefault("service", name)
        text = orjson.dumps(record).decode()
        # One lock keeps lines of different children whole.
        with self._out_lock:
            self._out.write(text + "\n")
            self._out.flush()


def line_relay(settings: Settings, stream: IO[str]) -> LineRelay:
    """The runner's relay of its children's output, in the configured format."""
    if settings.log_format == "json":
        return JsonLineRelay(stream)
    return LineRelay(stream)


__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "JsonLineRelay",
    "configure_logging",
    "line_relay",
    "make_formatter",
    "name_this_process",
    "restyle_handlers",
]

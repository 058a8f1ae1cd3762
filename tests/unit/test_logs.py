"""The log formats: key=value context lifted into fields, JSON lines, no secrets."""

from __future__ import annotations

import io
import json
import logging

from ticker.config import Settings
from ticker.logs import (
    ContextFilter,
    JsonLineRelay,
    configure_logging,
    make_handler,
    name_this_process,
)


def emit(settings: Settings, message: str, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    handler = make_handler(settings, stream)
    handler.filters[:] = [ContextFilter(account_id=None, task_id=lambda: None)]
    logger = logging.getLogger("tests.logs")
    record = logger.makeRecord(
        "tests.logs",
        logging.INFO,
        __file__,
        1,
        message,
        args,
        None,
        extra=extra or None,
    )
    handler.handle(record)
    return stream.getvalue()


def test_a_json_line_carries_the_messages_context_as_fields():
    line = emit(
        Settings(log_format="json"),
        "subscribe account=%s token=%s mode=%s task=%s",
        "sim-a",
        13660418,
        "FULL",
        "b72ca9b8",
        event="subscribe",
    )

    record = json.loads(line)

    assert (
        record["message"]
        == "subscribe account=sim-a token=13660418 mode=FULL task=b72ca9b8"
    )
    assert record["account_id"] == "sim-a"
    assert record["instrument_token"] == 13660418
    assert record["task_id"] == "b72ca9b8"
    assert record["event"] == "subscribe"
    assert record["level"] == "INFO" and record["logger"] == "tests.logs"
    assert "time" in record


def test_text_stays_one_plain_line():
    line = emit(
        Settings(log_format="text"), "socket open account=%s connection=%d", "sim-a", 0
    )

    assert line.endswith("INFO tests.logs: socket open account=sim-a connection=0\n")
    assert line.count("\n") == 1


def test_the_running_celery_task_and_the_workers_account_fill_in_what_is_missing():
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "reconciled tokens=3", None, None
    )

    ContextFilter(account_id="sim-b", task_id=lambda: "task-7").filter(record)

    assert record.account_id == "sim-b" and record.task_id == "task-7"


def test_the_message_names_the_account_before_the_workers_own():
    record = logging.LogRecord(
        "x",
        logging.INFO,
        __file__,
        1,
        "subscriptions moved off account=%s",
        ("sim-a",),
        None,
    )

    ContextFilter(account_id="sim-b", task_id=lambda: None).filter(record)

    assert record.account_id == "sim-a"


def test_credentials_are_masked_in_messages_and_fields():
    line = emit(
        Settings(log_format="json"),
        "dialing wss://ws.kite.trade?api_key=k&access_token=%s then secret=%s",
        "tok3n",
        "s3cret",
        access_token="tok3n",
    )

    assert "tok3n" not in line and "s3cret" not in line
    record = json.loads(line)
    assert record["access_token"] == "[masked]"
    assert "access_token=[masked]" in record["message"]


def test_the_runners_json_relay_tags_every_line_with_its_process():
    stream = io.StringIO()
    relay = JsonLineRelay(stream)

    relay.write("worker-sim-a", '{"message": "socket open", "level": "INFO"}')
    relay.write("redis", "Ready to accept connections")

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {
        "message": "socket open",
        "level": "INFO",
        "service": "worker-sim-a",
    }
    assert second == {"message": "Ready to accept connections", "service": "redis"}


def test_a_named_process_tags_its_own_records():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(Settings(log_format="json"), stream)
        name_this_process("runner")
        logging.getLogger("tests.logs").info("stack up")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.captureWarnings(False)

    assert json.loads(stream.getvalue())["service"] == "runner"

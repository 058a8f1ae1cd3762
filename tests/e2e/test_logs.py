"""TICKER_LOG_FORMAT=json: every process of a run logs one JSON object a line.

A stack of its own (about 20 s to start), since the shared one logs plain text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import TICK_INTERVAL_S
from tests.e2e.test_subscriptions import event_for, nfo_tokens, subscribe
from tests.listen import ChannelListener
from tests.stack import Stack, running_stack
from ticker.accounts import load_accounts
from ticker.config import EXAMPLE_ACCOUNTS_FILE

EVENT_TIMEOUT_S = 30.0
# The runner and every process it starts, as it names them.
PROCESSES = {
    "runner",
    "migrate",
    "simulator",
    "web",
    "worker-sim-a",
    "worker-sim-b",
    "backfill-worker",
    "beat",
    "flower",
}


@pytest.fixture(scope="module")
def json_stack(
    run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        f"{run_id}_json",
        tmp_path_factory.mktemp("json-stack"),
        TICKER_LOG_FORMAT="json",
        TICKER_SIM_TICK_INTERVAL_S=str(TICK_INTERVAL_S),
    ) as running:
        yield running


def records(stack: Stack) -> list[dict]:
    """Every output line of the run, parsed as JSON (failing on any that is not)."""
    parsed = []
    for line in list(stack.process.lines):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"a line of the run is not JSON: {line!r}")
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def one(found: list[dict], service: str, **fields: object) -> dict:
    matching = [
        r
        for r in found
        if r.get("service") == service and all(r.get(k) == v for k, v in fields.items())
    ]
    assert matching, f"no {fields} record from {service}"
    return matching[0]


def wait_for_record(
    stack: Stack, service: str, timeout_s: float, **fields: object
) -> None:
    # Relayed output trails the event that caused it by a few milliseconds.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(
            r.get("service") == service
            and all(r.get(k) == v for k, v in fields.items())
            for r in records(stack)
        ):
            return
        time.sleep(0.1)


def test_a_subscribe_is_one_json_record_in_each_process_with_its_context(json_stack):
    [token] = nfo_tokens(json_stack, 1, skip=740)
    with ChannelListener(json_stack.redis_url, json_stack.events_channel) as events:
        answer = subscribe(json_stack, token, "FULL").json()
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
        events.wait_for(event_for(token, "backfill_completed"), EVENT_TIMEOUT_S)
    account, task_id = answer["account_id"], answer["task_id"]
    wait_for_record(
        json_stack, "backfill-worker", 5, event="backfill_done", instrument_token=token
    )

    found = records(json_stack)
    accepted = one(found, "web", event="subscription_accepted", instrument_token=token)
    applied = one(found, f"worker-{account}", event="subscribe", instrument_token=token)
    backfilled = one(
        found, "backfill-worker", event="backfill_done", instrument_token=token
    )

    assert accepted["account_id"] == applied["account_id"] == account
    assert accepted["task_id"] == applied["task_id"] == task_id
    assert backfilled["account_id"] == account
    assert backfilled["task_id"] and backfilled["task_id"] != task_id
    for record in (accepted, applied, backfilled):
        assert record["level"] == "INFO" and record["time"] and record["logger"]
    opened = one(found, f"worker-{account}", event="socket_open")
    assert opened["account_id"] == account and opened["connection"] == 0


def test_every_process_logs_json_and_no_access_token(json_stack):
    secrets = [a.resolve_access_token() for a in load_accounts(EXAMPLE_ACCOUNTS_FILE)]

    found = records(json_stack)

    assert PROCESSES <= {r.get("service") for r in found}
    for service in PROCESSES:
        # Each process's own logger wrote JSON (not only wrapped banner lines).
        assert any(r.get("service") == service and "level" in r for r in found), service
    # gunicorn's own lines (master, access log) are JSON records too.
    assert any(r.get("logger") == "gunicorn.error" for r in found)
    assert any(r.get("logger") == "gunicorn.access" for r in found)
    text = "\n".join(json_stack.process.lines)
    for secret in secrets:
        assert secret not in text

"""Backfill through the whole stack: linked to subscribe, paced, stored, announced."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import psutil
import psycopg
import pytest
import requests
from celery import Celery

from tests.e2e.test_subscriptions import nfo_tokens, subscribe, unsubscribe
from tests.listen import ChannelListener
from ticker.accounts import load_accounts
from ticker.backfill import trading_days_back
from ticker.config import EXAMPLE_ACCOUNTS_FILE
from ticker.ticks import IST

BACKFILL_TIMEOUT_S = 30.0
pytestmark = pytest.mark.timeout(240)


def completed_for(token: int):
    return lambda m: m["event_type"] == "backfill_completed" and m["instrument_token"] == token


def candle_rows(stack, token: int) -> int:
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM candles WHERE instrument_token = %s", (token,)
        ).fetchone()[0]


def start_times(stack, token: int) -> set[datetime]:
    with psycopg.connect(stack.database_url) as conn:
        return {row[0] for row in conn.execute(
            "SELECT start_at FROM candles WHERE instrument_token = %s", (token,))}


def delete_latest(stack, token: int, count: int) -> set[datetime]:
    """Deletes the token's newest candles and says which ones went."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        return {row[0] for row in conn.execute(
            """DELETE FROM candles WHERE instrument_token = %s AND start_at IN (
                   SELECT start_at FROM candles WHERE instrument_token = %s
                   ORDER BY start_at DESC LIMIT %s)
               RETURNING start_at""",
            (token, token, count),
        )}


def assert_stored_only_what_was_missing(
    stack, token: int, before: set[datetime], outcome: dict
) -> None:
    """During market hours a minute may finish between two backfills, so the
    count is checked against the rows that really appeared, not a constant."""
    after = start_times(stack, token)
    assert before <= after
    assert outcome["metadata"]["candles_stored"] == len(after - before)


def send_backfill(stack, token: int) -> None:
    """What beat's gap fill sends: a backfill task on the stack's backfill queue."""
    app = Celery(broker=stack.redis_url)
    app.send_task("ticker.backfill", args=[token],
                  queue=stack.env.get("TICKER_BACKFILL_QUEUE", "ticker.backfill"))
    app.close()


def test_a_new_subscription_gets_its_last_five_trading_days(stack, record_property):
    [token] = nfo_tokens(stack, 1, skip=150)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        asked_at = time.monotonic()
        answer = subscribe(stack, token, "QUOTE")
        [done] = events.wait_for(completed_for(token), BACKFILL_TIMEOUT_S)
        stored_s = time.monotonic() - asked_at

    candles = requests.get(f"{stack.api}/subscriptions/{token}/candles",
                           params={"interval": "minute"}, timeout=10).json()
    expected_start = trading_days_back(datetime.now(IST), 5)
    assert done["metadata"]["candles_stored"] == candles["count"] == candle_rows(stack, token)
    assert candles["count"] >= 4 * 375
    assert datetime.fromisoformat(candles["candles"][0]["date"]) == expected_start
    assert candles["candles"][0]["oi"] is not None
    assert done["metadata"]["account_id"] == answer.json()["account_id"]
    record_property("candles stored for 5 trading days", candles["count"])
    record_property("seconds from the POST to backfill_completed", round(stored_s, 2))

    # Flower shows the backfill as the subscribe task's child.
    tasks = requests.get(f"{stack.flower}/api/tasks",
                         params={"taskname": "ticker.backfill"}, timeout=10).json()
    assert any(t.get("parent_id") == answer.json()["task_id"] for t in tasks.values())
    unsubscribe(stack, token)


def test_a_second_backfill_adds_no_rows(stack):
    [token] = nfo_tokens(stack, 1, skip=151)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        subscribe(stack, token, "LTP")
        events.wait_for(completed_for(token), BACKFILL_TIMEOUT_S)
        before = start_times(stack, token)

        send_backfill(stack, token)
        _, again = events.wait_for(completed_for(token), BACKFILL_TIMEOUT_S, count=2)

    # Nothing again, but for any minute that finished since the first run.
    assert_stored_only_what_was_missing(stack, token, before, again)
    assert again["metadata"]["candles_stored"] <= 1
    unsubscribe(stack, token)


def test_fifty_subscriptions_at_once_stay_within_kites_historical_rate(stack, record_property):
    tokens = nfo_tokens(stack, 50, skip=160)
    requests.delete(f"{stack.sim_rest}/_sim/historical", timeout=5)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda t: subscribe(stack, t, "LTP"), tokens))
        assert all(a.status_code == 202 for a in answers)
        events.wait_for(
            lambda m: m["event_type"] == "backfill_completed" and m["instrument_token"]
            in tokens, 90.0, count=50,
        )

    record = requests.get(f"{stack.sim_rest}/_sim/historical", timeout=5).json()
    asked = [r for r in record if r["instrument_token"] in tokens]
    assert len({r["instrument_token"] for r in asked}) == 50
    assert [r for r in asked if r["status"] != 200] == []
    for api_key in sorted({r["api_key"] for r in asked}):
        arrivals = sorted(r["at"] for r in asked if r["api_key"] == api_key)
        busiest = max(
            sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals
        )
        record_property(f"{api_key}: requests, most within any 1 s",
                        f"{len(arrivals)}, {busiest}")
        assert busiest <= 3, f"{api_key}: {busiest} requests within one second"
    for token in tokens:
        unsubscribe(stack, token)
    time.sleep(0.5)


def test_the_gap_fill_job_fetches_exactly_what_is_missing(stack):
    tokens = nfo_tokens(stack, 2, skip=230)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        for token in tokens:
            subscribe(stack, token, "LTP")
        for token in tokens:
            events.wait_for(completed_for(token), BACKFILL_TIMEOUT_S)
        complete = {token: start_times(stack, token) for token in tokens}
        deleted = delete_latest(stack, tokens[0], 40)

        app = Celery(broker=stack.redis_url)
        app.send_task("ticker.backfill_gaps", queue="ticker.backfill")
        app.close()
        refilled = {
            token: events.wait_for(completed_for(token), BACKFILL_TIMEOUT_S, count=2)[1]
            for token in tokens
        }

    assert len(deleted) == 40
    assert_stored_only_what_was_missing(
        stack, tokens[0], complete[tokens[0]] - deleted, refilled[tokens[0]])
    assert_stored_only_what_was_missing(stack, tokens[1], complete[tokens[1]], refilled[tokens[1]])
    assert start_times(stack, tokens[0]) >= complete[tokens[0]]
    for token in tokens:
        unsubscribe(stack, token)


@pytest.mark.parametrize("status", [503, 429])
def test_a_busy_or_failing_kite_is_retried_until_the_backfill_completes(stack, status):
    [token] = nfo_tokens(stack, 1, skip=240 + status % 10)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        account = subscribe(stack, token, "LTP").json()["account_id"]
        events.wait_for(completed_for(token), BACKFILL_TIMEOUT_S)
        api_key = load_accounts(EXAMPLE_ACCOUNTS_FILE).get(account).api_key
        failing = requests.post(
            f"{stack.sim_rest}/_sim/accounts/{api_key}/historical-errors",
            json={"status": status, "count": 2}, timeout=5)
        assert failing.status_code == 200, failing.text

        complete = start_times(stack, token)
        deleted = delete_latest(stack, token, 10)
        send_backfill(stack, token)
        _, again = events.wait_for(completed_for(token), BACKFILL_TIMEOUT_S, count=2)

    answers = [r["status"] for r in requests.get(f"{stack.sim_rest}/_sim/historical",
                                                 timeout=5).json()
               if r["instrument_token"] == token]
    # The first backfill's requests, then the two failures, then a success.
    assert answers[-3:] == [status, status, 200]
    assert len(deleted) == 10
    assert_stored_only_what_was_missing(stack, token, complete - deleted, again)
    assert start_times(stack, token) >= complete
    assert not events.matching(
        lambda m: m["event_type"] == "backfill_failed" and m["instrument_token"] == token)
    unsubscribe(stack, token)


def backfill_health(stack) -> dict:
    return requests.get(f"{stack.api}/health", timeout=5).json()["backfill"]


def wait_for_backfill_state(stack, state: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while (seen := backfill_health(stack))["state"] != state:
        assert time.monotonic() < deadline, f"backfill not {state} in {timeout_s}s: {seen}"
        time.sleep(0.25)
    return seen


def backfill_worker_process(stack) -> psutil.Process:
    runner = psutil.Process(stack.process.process.pid)
    for process in runner.children(recursive=True):
        if any(arg.startswith("backfill@") for arg in process.cmdline()):
            return process
    raise AssertionError("no backfill worker process")


def test_health_reports_the_backfill_worker_and_the_last_gap_fill(stack):
    running = wait_for_backfill_state(stack, "ok", 30.0)
    assert [w.split("@")[0] for w in running["workers"]] == ["backfill"]
    assert running["backlog"] == 0
    earlier = running["last_gap_fill"]  # an earlier test's gap fill, if any

    app = Celery(broker=stack.redis_url)
    app.send_task("ticker.backfill_gaps",
                  queue=stack.env.get("TICKER_BACKFILL_QUEUE", "ticker.backfill"))
    app.close()
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while (last := backfill_health(stack)["last_gap_fill"]) in (None, earlier):
        assert time.monotonic() < deadline, "the gap fill never reached /health"
        time.sleep(0.25)
    active = requests.get(f"{stack.api}/subscriptions", params={"status": "active"},
                          timeout=5).json()["count"]
    assert last["queued"] == active
    assert abs(datetime.fromisoformat(last["at"]) - datetime.now(IST)).total_seconds() < 30

    # A hung worker stops renewing its entry: /health says so, ticks are not its concern.
    worker = backfill_worker_process(stack)
    worker.send_signal(signal.SIGSTOP)
    try:
        down = wait_for_backfill_state(stack, "down", 20.0)
        assert down["workers"] == []
        assert requests.get(f"{stack.api}/health", timeout=5).status_code == 200
    finally:
        worker.send_signal(signal.SIGCONT)
    assert wait_for_backfill_state(stack, "ok", 20.0)["workers"] == running["workers"]


def test_a_date_without_a_time_asks_for_that_whole_day(stack):
    [token] = nfo_tokens(stack, 1, skip=250)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        subscribe(stack, token, "LTP")
        events.wait_for(completed_for(token), BACKFILL_TIMEOUT_S)
    try:
        with psycopg.connect(stack.database_url) as conn:
            day, rows = conn.execute(
                """SELECT (start_at AT TIME ZONE 'Asia/Kolkata')::date, count(*)
                   FROM candles WHERE instrument_token = %s
                   GROUP BY 1 ORDER BY 1 LIMIT 1""", (token,)).fetchone()

        answer = requests.get(f"{stack.api}/subscriptions/{token}/candles",
                              params={"from": day.isoformat(), "to": day.isoformat()},
                              timeout=10).json()

        assert rows == 375  # a whole session, the first of the five days
        assert answer["count"] == rows
        assert {c["date"][:10] for c in answer["candles"]} == {day.isoformat()}
    finally:
        unsubscribe(stack, token)

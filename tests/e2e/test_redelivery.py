"""A task the broker hands out again (past its visibility timeout) runs once.

A stack of its own: a visibility timeout of one second, a sweep for overdue
messages every second, and a historical pace of one request per three seconds per
api_key, so backfill tasks stay unacknowledged long enough to be handed out again
while they wait their turn.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest

from tests.e2e.test_subscriptions import event_for, nfo_tokens, subscribe, unsubscribe
from tests.listen import ChannelListener
from tests.stack import running_stack

TOKENS = 4
SKIPPED = re.compile(r"duplicate delivery skipped task=(\S+) name=ticker\.backfill")
BACKFILL_RUN = re.compile(r"backfill token=(\d+) interval=\w+ task=(\S+) try=1\b")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def redelivering_stack(run_id: str, tmp_path_factory: pytest.TempPathFactory):
    with running_stack(
        f"{run_id}vis", tmp_path_factory.mktemp("vis-stack"),
        TICKER_BROKER_VISIBILITY_TIMEOUT_S="1",
        # kombu looks for overdue messages every second, not every 100 s.
        TICKER_BROKER_TRANSPORT_OPTIONS=json.dumps(
            {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}),
        TICKER_HISTORICAL_REQUESTS_PER_WINDOW="1",
        TICKER_HISTORICAL_WINDOW_S="3",
    ) as stack:
        yield stack


def test_a_task_handed_out_again_after_the_visibility_timeout_runs_once(
    redelivering_stack,
):
    stack = redelivering_stack
    tokens = nfo_tokens(stack, TOKENS, skip=200)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        for token in tokens:
            assert subscribe(stack, token, "LTP").status_code == 202
        for token in tokens:
            events.wait_for(event_for(token, "backfill_completed"), 60.0)
        stack.process.wait_for_line(SKIPPED, 30.0)
        time.sleep(3.0)  # room for any late second run to show
        completed = Counter(e["instrument_token"] for e in events.matching(
            lambda e: e.get("event_type") == "backfill_completed"))
        created = Counter(e["instrument_token"] for e in events.matching(
            lambda e: e.get("event_type") == "subscription_created"))

    runs = Counter(m.group(2) for line in list(stack.process.lines)
                   if (m := BACKFILL_RUN.search(line)))
    skipped = {m.group(1) for line in list(stack.process.lines)
               if (m := SKIPPED.search(line))}
    assert skipped <= set(runs), "only tasks that ran were handed out again"
    assert all(count == 1 for count in runs.values()), runs
    assert len(runs) == TOKENS
    assert completed == Counter(tokens) and created == Counter(tokens)
    for token in tokens:
        unsubscribe(stack, token)

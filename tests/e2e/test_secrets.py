"""Access tokens never leave the workers: not in logs, answers, tasks or events."""

from __future__ import annotations

import redis
import requests

from tests.e2e.test_subscriptions import (
    EVENT_TIMEOUT_S,
    event_for,
    nfo_tokens,
    subscribe,
)
from tests.listen import ChannelListener
from ticker.accounts import load_accounts
from ticker.config import EXAMPLE_ACCOUNTS_FILE


def test_no_access_token_shows_anywhere_a_person_or_a_back_end_can_read(stack):
    secrets = [a.resolve_access_token() for a in load_accounts(EXAMPLE_ACCOUNTS_FILE)]
    [token] = nfo_tokens(stack, 1, skip=950)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        assert subscribe(stack, token, "FULL").status_code == 202
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
        assert requests.delete(f"{stack.api}/subscriptions/{token}", timeout=10).ok
        events.wait_for(event_for(token, "subscription_removed"), EVENT_TIMEOUT_S)

    readable = {
        "every line the stack logged": "\n".join(stack.process.lines),
        "tasks in Flower": requests.get(f"{stack.flower}/api/tasks", timeout=10).text,
        "events replayed": requests.get(f"{stack.api}/events", timeout=10).text,
        "accounts": requests.get(f"{stack.api}/accounts", timeout=10).text,
        "health": requests.get(f"{stack.api}/health", timeout=10).text,
        "metrics": requests.get(f"{stack.api}/metrics", timeout=10).text,
    }
    stream = redis.Redis.from_url(stack.redis_url).xrange(stack.env["TICKER_EVENTS_STREAM"])
    readable["events stream"] = repr(stream)

    assert len(stack.process.lines) > 100 and '"args"' in readable["tasks in Flower"]
    for place, text in readable.items():
        for secret in secrets:
            assert secret not in text, f"an access token shows in {place}"

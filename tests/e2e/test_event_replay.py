"""Events as a back end that was away reads them back: GET /events and plain XREAD."""

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

LIFECYCLE = ("subscription_created", "subscription_updated", "subscription_removed")


def newest_stream_id(client: redis.Redis, stream: str) -> str:
    newest = client.xrevrange(stream, count=1)
    return newest[0][0].decode() if newest else "0"


def test_a_tokens_events_replay_in_order_with_consecutive_sequence_numbers(stack):
    stream = stack.env["TICKER_EVENTS_STREAM"]
    client = redis.Redis.from_url(stack.redis_url)
    [token] = nfo_tokens(stack, 1, skip=900)
    before = newest_stream_id(client, stream)

    with ChannelListener(stack.redis_url, stack.events_channel) as live:
        assert subscribe(stack, token, "FULL").status_code == 202
        live.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
        assert subscribe(stack, token, "LTP").status_code == 202
        live.wait_for(event_for(token, "subscription_updated"), EVENT_TIMEOUT_S)
        assert requests.delete(f"{stack.api}/subscriptions/{token}", timeout=10).ok
        live.wait_for(event_for(token, "subscription_removed"), EVENT_TIMEOUT_S)
    heard = live.matching(lambda m: m["instrument_token"] == token)

    answer = requests.get(f"{stack.api}/events", params={"after": before}, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    replayed = [e for e in body["events"] if e["instrument_token"] == token]

    assert [e["event_type"] for e in replayed if e["event_type"] in LIFECYCLE] == list(
        LIFECYCLE)
    sequences = [e["sequence"] for e in replayed]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert body["gap"] is False
    assert body["last_id"] == body["events"][-1]["stream_id"]
    # What was heard live is what the replay returns, id for id, in the same order.
    lifecycle_heard = [e for e in heard if e["event_type"] in LIFECYCLE]
    lifecycle_replayed = [e for e in replayed if e["event_type"] in LIFECYCLE]
    assert lifecycle_heard == lifecycle_replayed
    assert len({e["event_id"] for e in replayed}) == len(replayed)

    # A plain XREAD from the same id sees the same entries.
    [(_, entries)] = client.xread({stream: before}, count=10_000)
    read = [entry_id.decode() for entry_id, fields in entries
            if b'"instrument_token":%d' % token in fields[b"event"]]
    assert read == [e["stream_id"] for e in replayed]


def test_a_replay_from_a_malformed_id_is_refused_naming_it(stack):
    answer = requests.get(f"{stack.api}/events", params={"after": "yesterday"}, timeout=10)

    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "after"


def test_a_replay_after_a_moment_in_milliseconds_reads_as_xread_does(stack):
    stream = stack.env["TICKER_EVENTS_STREAM"]
    client = redis.Redis.from_url(stack.redis_url)
    [token] = nfo_tokens(stack, 1, skip=905)
    with ChannelListener(stack.redis_url, stack.events_channel) as live:
        subscribe(stack, token, "LTP")
        [created] = live.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
    millisecond = created["stream_id"].split("-")[0]
    moment_before = str(int(millisecond) - 1)

    answer = requests.get(f"{stack.api}/events", params={"after": moment_before}, timeout=10)

    assert answer.status_code == 200, answer.text
    replayed = [e["stream_id"] for e in answer.json()["events"]]
    [(_, entries)] = client.xread({stream: moment_before}, count=10_000)
    # Read after the replay: its backfill's event may have come in between.
    assert replayed == [entry_id.decode() for entry_id, _ in entries][:len(replayed)]
    assert created["stream_id"] in replayed
    assert requests.delete(f"{stack.api}/subscriptions/{token}", timeout=10).ok

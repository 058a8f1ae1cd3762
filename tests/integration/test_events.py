"""Events on the real Redis: published once, kept in a capped stream, replayed from it."""

from __future__ import annotations

import pytest

from tests.listen import ChannelListener
from ticker.events import EventPublisher, new_event_id, read_stream


def event(token: int, event_type: str = "subscription_created") -> dict:
    return {
        "event_id": new_event_id(),
        "event_type": event_type,
        "instrument_token": token,
        "metadata": {"account_id": "acct-a"},
        "timestamp": 1.5,
        "sequence": 1,
    }


@pytest.fixture
def stream(redis_client, request):
    name = f"test:events:{request.node.name}"
    yield name
    redis_client.delete(name)


def wait_until_seen(redis_client, channel: str, listener: ChannelListener) -> None:
    """Everything published on `channel` before now has reached `listener`."""
    redis_client.publish(channel, b'{"event_type": "end"}')
    listener.wait_for(lambda m: m["event_type"] == "end", 5.0)


def test_a_published_event_is_in_the_stream_with_the_id_it_was_announced_under(
        redis_client, redis_url, settings, stream):
    publisher = EventPublisher(redis_client, settings.events_channel, settings.key_prefix,
                               stream, 1000)
    sent = event(11)
    with ChannelListener(redis_url, settings.events_channel) as live:
        stream_id = publisher.publish(sent)
        [heard] = live.wait_for(lambda m: m.get("instrument_token") == 11, 5.0)

    assert heard == {"stream_id": stream_id, **sent}
    [(entry_id, fields)] = redis_client.xrange(stream)
    assert entry_id.decode() == stream_id
    events, gap = read_stream(redis_client, stream, "0", 10)
    assert events == [heard]
    assert gap is False


def test_an_event_id_is_published_and_stored_once(redis_client, redis_url, settings, stream):
    publisher = EventPublisher(redis_client, settings.events_channel, settings.key_prefix,
                               stream, 1000)
    sent = event(12)
    with ChannelListener(redis_url, settings.events_channel) as live:
        first = publisher.publish(sent)
        again = publisher.publish(sent)
        wait_until_seen(redis_client, settings.events_channel, live)

    assert first is not None and again is None
    assert len(live.matching(lambda m: m.get("instrument_token") == 12)) == 1
    assert redis_client.xlen(stream) == 1


def test_a_replay_pages_from_the_last_id_seen(redis_client, settings, stream):
    publisher = EventPublisher(redis_client, settings.events_channel, settings.key_prefix,
                               stream, 1000)
    ids = [publisher.publish(event(token)) for token in range(100, 105)]

    page, _ = read_stream(redis_client, stream, ids[1], 2)
    rest, gap = read_stream(redis_client, stream, page[-1]["stream_id"], 10)

    assert [e["instrument_token"] for e in page] == [102, 103]
    assert [e["instrument_token"] for e in rest] == [104]
    assert [e["stream_id"] for e in page + rest] == ids[2:]
    assert gap is False
    assert read_stream(redis_client, stream, ids[-1], 10) == ([], False)


def test_a_replay_from_before_what_the_cap_kept_says_there_is_a_gap(
        redis_client, settings, stream):
    publisher = EventPublisher(redis_client, settings.events_channel, settings.key_prefix,
                               stream, 10)
    ids = [publisher.publish(event(token)) for token in range(1000, 1500)]
    kept = redis_client.xlen(stream)
    assert kept < 500  # the cap trimmed the oldest

    from_start, gap_from_start = read_stream(redis_client, stream, "0", 1000)
    _, gap_from_recent = read_stream(redis_client, stream, ids[-2], 1000)

    assert len(from_start) == kept and gap_from_start is True
    assert gap_from_recent is False


def test_a_replay_from_the_last_possible_id_is_empty_not_an_error(redis_client, settings, stream):
    publisher = EventPublisher(redis_client, settings.events_channel, settings.key_prefix,
                               stream, 1000)
    publisher.publish(event(20))
    last = f"{2**64 - 1}-{2**64 - 1}"

    assert read_stream(redis_client, stream, last, 10) == ([], False)
    # One below it is an ordinary exclusive start, which Redis takes.
    assert read_stream(redis_client, stream, f"{2**64 - 1}-{2**64 - 2}", 10) == ([], False)


def test_an_event_goes_out_with_its_keys_in_the_documented_order(
        redis_client, redis_url, settings, stream):
    publisher = EventPublisher(redis_client, settings.events_channel, settings.key_prefix,
                               stream, 1000)
    # As the outbox's jsonb hands events back: shortest keys first.
    sent = event(12)
    sent["metadata"] = {"segment": "NFO-OPT", "account_id": "acct-a",
                        "tradingsymbol": "NIFTY26D0824000CE", "requested_mode": "FULL"}
    shuffled = {key: sent[key] for key in sorted(sent, key=lambda k: (len(k), k))}
    with ChannelListener(redis_url, settings.events_channel) as live:
        publisher.publish(shuffled)
        [heard] = live.wait_for(lambda m: m.get("instrument_token") == 12, 5.0)

    assert list(heard) == ["stream_id", "event_id", "event_type", "instrument_token",
                           "metadata", "timestamp", "sequence"]
    assert list(heard["metadata"]) == ["tradingsymbol", "segment", "requested_mode",
                                       "account_id"]

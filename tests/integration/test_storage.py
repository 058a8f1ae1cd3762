"""The subscriptions table against the real PostgreSQL, under real concurrency."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import psycopg
import pytest

from tests.listen import ChannelListener
from ticker.errors import CapacityExhausted, SubscriptionNotFound
from ticker.events import EventPublisher, lifecycle_event
from ticker.instruments import Instrument
from ticker.storage import outbox, requesters
from ticker.storage import subscriptions as store
from ticker.subscriptions import DEFAULT_CLIENT_ID, Mode, Status

LIMITS = [("acct-a", 30), ("acct-b", 20)]


@pytest.fixture(autouse=True)
def empty_outbox(db):
    yield
    db.execute("TRUNCATE event_outbox")


def stored_events(db) -> list[dict]:
    return [row[0] for row in db.execute("SELECT payload FROM event_outbox ORDER BY id")]


def instrument(token: int) -> Instrument:
    return Instrument(token, f"SYM{token}", "NFO", "NFO-OPT")


def place(conn, token: int, mode: Mode = Mode.FULL, alive=lambda _: True):
    return store.place(conn, instrument(token), mode, LIMITS, alive, str(uuid.uuid4()))


def test_a_new_token_goes_to_the_account_with_most_free_room(db):
    for token in range(1, 13):
        place(db, token)

    # acct-a (30) takes tokens until its free room equals acct-b's (20), wins
    # the tie as the first listed, and then the two alternate.
    assert store.usage_by_account(db) == {"acct-a": 11, "acct-b": 1}


def test_dead_accounts_get_nothing(db):
    placed = place(db, 7, alive=lambda account: account == "acct-b")

    assert placed.subscription.account_id == "acct-b"


def test_the_same_request_twice_needs_no_second_task(db):
    first = place(db, 5, Mode.FULL)
    second = place(db, 5, Mode.FULL)

    assert (first.task_needed, first.created) == (True, True)
    assert (second.task_needed, second.created) == (False, False)
    assert second.subscription.version == first.subscription.version


def test_a_mode_change_keeps_the_account_and_bumps_the_version(db):
    first = place(db, 5, Mode.FULL)
    store.record_applied(db, 5, first.subscription.account_id, Mode.FULL, 1, lifecycle_event)

    changed = place(db, 5, Mode.LTP)

    assert changed.task_needed and not changed.created
    assert changed.subscription.account_id == first.subscription.account_id
    assert changed.subscription.status is Status.ACTIVE
    assert changed.subscription.version == 2


def test_concurrent_placements_never_overfill_an_account(database_url, db):
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def subscribe_range(tokens: range) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for token in tokens:
                try:
                    place(conn, token)
                    result = "placed"
                except CapacityExhausted:
                    result = "full"
                with lock:
                    outcomes[result] += 1

    threads = [
        threading.Thread(target=subscribe_range, args=(range(start, start + 20),))
        for start in range(1, 201, 20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == {"placed": 50, "full": 150}
    assert store.usage_by_account(db) == {"acct-a": 30, "acct-b": 20}


def test_concurrent_requests_for_one_token_place_it_once(database_url, db):
    results = []

    def subscribe_once() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            results.append(place(conn, 42))

    threads = [threading.Thread(target=subscribe_once) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(r.created for r in results) == 1
    assert sum(r.task_needed for r in results) == 1
    assert len({r.subscription.account_id for r in results}) == 1
    assert len(store.list_subscriptions(db)) == 1


def test_a_stale_task_does_not_settle_a_newer_request(db):
    placed = place(db, 9).subscription
    removal = store.withdraw(db, 9, DEFAULT_CLIENT_ID, "task-2").subscription

    row = store.record_applied(db, 9, placed.account_id, Mode.FULL, placed.version,
                               lifecycle_event)

    assert row.applied_mode is Mode.FULL
    assert row.status is Status.REMOVING  # the queued removal still decides

    row = store.record_applied(db, 9, placed.account_id, None, removal.version,
                               lifecycle_event)

    assert (row.status, row.applied_mode) == (Status.REMOVED, None)
    assert [e["event_type"] for e in stored_events(db)] == [
        "subscription_created", "subscription_removed"]


def test_removing_an_unknown_token_is_not_found(db):
    with pytest.raises(SubscriptionNotFound, match="no pending or active"):
        store.withdraw(db, 123, DEFAULT_CLIENT_ID, "task")


def test_undo_restores_the_row_a_failed_dispatch_changed(db):
    placed = place(db, 11)
    store.undo(db, placed.subscription, placed.previous, placed.client_id,
               placed.previous_hold)
    assert store.get(db, 11) is None

    live = place(db, 12).subscription
    store.record_applied(db, 12, live.account_id, Mode.FULL, live.version, lifecycle_event)
    before = store.get(db, 12)
    removal = store.withdraw(db, 12, DEFAULT_CLIENT_ID, "task")
    store.undo(db, removal.subscription, removal.previous, removal.client_id,
               removal.previous_hold)

    assert store.get(db, 12) == before
    assert requesters.by_token(db, [12])[12] == [(DEFAULT_CLIENT_ID, Mode.FULL)]


def hold(conn, token: int, client_id: str, mode: Mode):
    return store.place(conn, instrument(token), mode, LIMITS, lambda _: True,
                       str(uuid.uuid4()), client_id=client_id)


def test_the_socket_carries_the_highest_mode_any_requester_asks_for(db):
    first = hold(db, 30, "desk-a", Mode.LTP)
    second = hold(db, 30, "desk-b", Mode.FULL)
    third = hold(db, 30, "desk-c", Mode.QUOTE)

    assert (first.task_needed, first.subscription.requested_mode) == (True, Mode.LTP)
    assert (second.task_needed, second.subscription.requested_mode) == (True, Mode.FULL)
    # FULL already serves QUOTE: nothing to send.
    assert (third.task_needed, third.subscription.requested_mode) == (False, Mode.FULL)
    assert second.subscription.account_id == first.subscription.account_id
    assert requesters.by_token(db, [30])[30] == [
        ("desk-a", Mode.LTP), ("desk-b", Mode.FULL), ("desk-c", Mode.QUOTE)]


def test_one_requester_leaving_keeps_the_token_for_the_others_in_their_mode(db):
    hold(db, 31, "desk-a", Mode.LTP)
    hold(db, 31, "desk-b", Mode.FULL)

    lowered = store.withdraw(db, 31, "desk-b", "task-1")
    unchanged = hold(db, 31, "desk-c", Mode.LTP)
    kept = store.withdraw(db, 31, "desk-c", "task-2")
    last = store.withdraw(db, 31, "desk-a", "task-3")

    assert (lowered.change, lowered.subscription.requested_mode) == ("mode", Mode.LTP)
    assert lowered.subscription.status is Status.PENDING
    assert unchanged.task_needed is False
    assert kept.change is None
    assert (last.change, last.subscription.status) == ("unsubscribe", Status.REMOVING)
    assert requesters.by_token(db, [31]) == {}


def test_a_requester_that_holds_nothing_cannot_withdraw_or_change_it(db):
    hold(db, 32, "desk-a", Mode.QUOTE)

    with pytest.raises(SubscriptionNotFound, match="desk-b"):
        store.withdraw(db, 32, "desk-b", "task")
    with pytest.raises(SubscriptionNotFound, match="desk-b"):
        store.place(db, instrument(32), Mode.FULL, LIMITS, lambda _: True, "task",
                    client_id="desk-b", must_hold=True)
    assert store.get(db, 32).requested_mode is Mode.QUOTE


def test_undo_puts_a_joining_requester_back_out(db):
    hold(db, 33, "desk-a", Mode.LTP)
    joined = hold(db, 33, "desk-b", Mode.FULL)

    store.undo(db, joined.subscription, joined.previous, joined.client_id,
               joined.previous_hold)

    assert store.get(db, 33).requested_mode is Mode.LTP
    assert requesters.by_token(db, [33])[33] == [("desk-a", Mode.LTP)]


def test_moving_off_an_account_fills_the_others_and_strands_the_rest(db):
    limits = [("acct-a", 4), ("acct-b", 2), ("acct-c", 1)]
    for token in range(1, 5):
        store.place(db, instrument(token), Mode.LTP, limits,
                    lambda account: account == "acct-a", str(uuid.uuid4()))

    moved, stranded = store.move_off(db, "acct-a", limits, {"acct-b", "acct-c"},
                                     "token refused")

    assert Counter(m.account_id for m in moved) == {"acct-b": 2, "acct-c": 1}
    assert all(m.moved_from == "acct-a" and m.status is Status.PENDING for m in moved)
    assert all(m.version == 2 for m in moved)
    [left] = stranded
    assert (left.account_id, left.status) == ("acct-a", Status.PENDING)
    assert left.status_reason.startswith("token refused; all 2 live accounts are full")
    assert store.usage_by_account(db) == {"acct-a": 1, "acct-b": 2, "acct-c": 1}


def test_an_applied_change_is_stored_with_its_event_and_a_repeat_adds_none(db):
    placed = place(db, 21, Mode.LTP).subscription

    store.record_applied(db, 21, placed.account_id, Mode.LTP, placed.version,
                         lifecycle_event)
    store.record_applied(db, 21, placed.account_id, Mode.LTP, placed.version,
                         lifecycle_event)

    [event] = stored_events(db)
    assert (event["event_type"], event["instrument_token"]) == ("subscription_created", 21)


def test_a_flush_publishes_in_order_and_empties_the_outbox(db):
    placed = place(db, 22, Mode.FULL).subscription
    store.record_applied(db, 22, placed.account_id, Mode.FULL, placed.version,
                         lifecycle_event)
    store.record_applied(db, 22, placed.account_id, Mode.QUOTE, placed.version,
                         lifecycle_event)
    published = []

    assert outbox.flush(db, placed.account_id, published.append) == 2

    assert [e["event_type"] for e in published] == [
        "subscription_created", "subscription_updated"]
    assert stored_events(db) == []


def test_a_failed_publish_keeps_the_events_for_the_next_flush(db):
    placed = place(db, 23, Mode.FULL).subscription
    store.record_applied(db, 23, placed.account_id, Mode.FULL, placed.version,
                         lifecycle_event)

    def refuse(event):
        raise ConnectionError("redis is away")

    with pytest.raises(ConnectionError):
        outbox.flush(db, placed.account_id, refuse)

    assert len(stored_events(db)) == 1


def test_a_flush_repeated_after_a_crash_publishes_nothing_twice(
        db, redis_client, redis_url, settings):
    """A worker killed after its publish, before the outbox row's delete committed."""
    placed = place(db, 24, Mode.LTP).subscription
    store.record_applied(db, 24, placed.account_id, Mode.LTP, placed.version,
                         lifecycle_event)
    publisher = EventPublisher.from_settings(redis_client, settings)

    def publish_then_die(event):
        publisher.publish(event)
        raise SystemExit("killed before the delete committed")

    with ChannelListener(redis_url, settings.events_channel) as events:
        with pytest.raises(SystemExit):
            outbox.flush(db, placed.account_id, publish_then_die)
        assert len(stored_events(db)) == 1

        assert outbox.flush(db, placed.account_id, publisher.publish) == 1
        # A marker publish after it proves the listener has seen all before it.
        redis_client.publish(settings.events_channel, b'{"event_type": "end"}')
        events.wait_for(lambda m: m["event_type"] == "end", 5.0)

    [created] = events.matching(lambda m: m["event_type"] == "subscription_created")
    assert created["instrument_token"] == 24
    assert created["event_id"]
    assert stored_events(db) == []


def test_a_batch_places_what_fits_and_refuses_the_rest_item_by_item(db):
    task_ids: dict[str, str] = {}
    wanted = [(instrument(token), Mode.QUOTE) for token in range(100, 160)]

    outcomes = store.place_many(db, wanted, LIMITS, lambda _: True,
                                lambda account: task_ids.setdefault(account, f"t-{account}"),
                                client_id="desk-batch")

    placed = [o for o in outcomes if isinstance(o, store.Placement)]
    refused = [o for o in outcomes if isinstance(o, CapacityExhausted)]
    assert (len(placed), len(refused)) == (50, 10)
    # What fits is what comes first; the refused items wrote nothing.
    assert all(isinstance(o, store.Placement) for o in outcomes[:50])
    assert store.usage_by_account(db) == {"acct-a": 30, "acct-b": 20}
    assert {p.subscription.task_id for p in placed} == {"t-acct-a", "t-acct-b"}
    assert all(p.subscription.task_id == f"t-{p.subscription.account_id}" for p in placed)
    assert store.get(db, 155) is None
    assert requesters.by_token(db, [100])[100] == [("desk-batch", Mode.QUOTE)]

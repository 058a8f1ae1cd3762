"""Everything one account's worker process runs besides Celery itself.

It takes the account's lease, opens the account's sockets with every subscription
PostgreSQL holds for it, publishes ticks, and applies each change a task brings:
socket first, then the row, then the event, so an event always describes something
the socket already carries.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import redis
from psycopg_pool import ConnectionPool

from ticker import access_tokens
from ticker.accounts import Account, Accounts, load_accounts
from ticker.config import Settings
from ticker.errors import SocketUnavailable, SubscriptionRefused, TickerError
from ticker.events import EventPublisher, lifecycle_event
from ticker.fanout import TickFanout, last_prices_key
from ticker.lease import AccountLease, lease_key
from ticker.liveness import placeable_accounts, state_key
from ticker.service import TaskSender
from ticker.socket_holder import Phase, SocketHolder
from ticker.storage import outbox
from ticker.storage import subscriptions as store
from ticker.subscriptions import Mode, Status, Subscription

log = logging.getLogger(__name__)

# How long a change waits for its connection to (re)open before the task retries.
SOCKET_OPEN_TIMEOUT_S = 10.0
# Reconcile leaves rows changed this recently to the tasks queued for them.
RECONCILE_GRACE_S = 5.0


class AccountWorker:
    def __init__(
        self,
        settings: Settings,
        account: Account,
        pool: ConnectionPool,
        client: redis.Redis,
        owner: str,
        sender: TaskSender,
        accounts: Accounts,
    ) -> None:
        self.settings = settings
        self.account = account
        self._sender = sender
        self._accounts = accounts
        # Set to run a reconcile round now rather than at the next interval.
        self._wake = threading.Event()
        self._refused = False
        self._pool = pool
        self._client = client
        self._lease = AccountLease(
            client, lease_key(settings.key_prefix, account.id), owner, settings.worker_lease_s
        )
        self._events = EventPublisher.from_settings(client, settings)
        self._fanout = TickFanout(
            client, settings.ticks_channel, account.id, settings.tick_backlog_frames,
            last_prices_key=last_prices_key(settings.key_prefix),
        )
        self._access_token = self._starting_token()
        # The token connections Kite refused were last redialed with: each token is
        # tried once on them, so a refused one never turns into a retry loop.
        self._redialed_with = self._access_token
        # The heartbeat and reconcile threads both pick up new tokens; one at a time,
        # or both would redial the same refused connection.
        self._token_lock = threading.Lock()
        self._holder = SocketHolder(
            account_id=account.id,
            api_key=account.api_key,
            access_token=self._access_token,
            ws_root=settings.kite_ws_root,
            max_instruments_per_connection=account.max_instruments_per_connection,
            max_connections=account.max_connections,
            on_frame=self._fanout.submit,
        )
        self._stopping = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"heartbeat-{account.id}", daemon=True
        )
        self._reconciler = threading.Thread(
            target=self._reconcile_forever, name=f"reconcile-{account.id}", daemon=True
        )

    def start(self) -> None:
        """Take the lease, then stream every subscription the database holds for us."""
        self._lease.acquire()
        with self._pool.connection() as conn:
            rows = store.list_subscriptions(conn, account_id=self.account.id)
        initial = {
            row.instrument_token: row.requested_mode
            for row in rows
            if row.status in (Status.PENDING, Status.ACTIVE)
        }
        self._fanout.start()
        self._holder.start(initial)
        self._heartbeat.start()
        self._reconciler.start()
        log.info("account worker started account=%s subscriptions=%d",
                 self.account.id, len(initial))

    def stop(self) -> None:
        """Close the sockets first (Kite frees the slot), then give the account up."""
        self._stopping.set()
        self._wake.set()
        self._holder.stop()
        self._fanout.stop()
        try:
            self._client.delete(state_key(self.settings.key_prefix, self.account.id))
            self._lease.release()
        except redis.RedisError as exc:
            # The lease then lapses by itself within worker_lease_s.
            log.warning("lease not released account=%s: %s", self.account.id, exc)
        log.info("account worker stopped account=%s", self.account.id)

    def apply_subscribe(self, instrument_token: int, mode: Mode, version: int | None) -> None:
        """Put a token on the socket and record it; raises SubscriptionRefused.

        A refused token is recorded as pending with Kite's reason, and nothing is
        announced: reconcile rounds try it again.
        """
        self._holder.subscribe(instrument_token, mode)
        self._wait_open([instrument_token])
        self._confirm_and_record(instrument_token, mode, version)
        self.flush_events()

    def apply_subscribe_many(self, changes: list[tuple[int, Mode, int | None]]
                             ) -> list[int]:
        """Put a batch of tokens on the sockets in few messages and record each.

        Returns the tokens Kite refused: each is recorded as pending with Kite's
        reason, as a single subscribe's would be, and the rest of the batch stands.
        The rest is recorded in one transaction, so the batch costs one commit.
        """
        self._holder.subscribe_many({token: mode for token, mode, _ in changes})
        self._wait_open([token for token, _, _ in changes])
        refused, confirmed = [], []
        for token, mode, version in changes:
            try:
                self._confirm(token)
            except SubscriptionRefused:
                refused.append(token)
            else:
                confirmed.append((token, mode, version))
        with self._pool.connection() as conn, conn.transaction():
            recorded = [(token, self._record(conn, token, mode, version))
                        for token, mode, version in confirmed]
        for token, row in recorded:
            if row is None:
                self._drop_withdrawn(token)
        self.flush_events()
        return refused

    def _wait_open(self, tokens: list[int]) -> None:
        for token in tokens:
            if not self._holder.wait_until_open(token, SOCKET_OPEN_TIMEOUT_S):
                raise SocketUnavailable(
                    f"account {self.account.id!r}: socket for token {token} not open "
                    f"after {SOCKET_OPEN_TIMEOUT_S:.0f} s; the change is kept and will "
                    "be confirmed on reconnect"
                )

    def _confirm_and_record(self, token: int, mode: Mode, version: int | None) -> None:
        """Wait for Kite to stream (or refuse) a sent token, then record the outcome."""
        self._confirm(token)
        with self._pool.connection() as conn:
            row = self._record(conn, token, mode, version)
        if row is None:
            self._drop_withdrawn(token)

    def _confirm(self, token: int) -> None:
        """Return once Kite streams a sent token; a refusal is recorded and raised."""
        try:
            self._holder.wait_confirmed(token)
        except SubscriptionRefused as exc:
            with self._pool.connection() as conn:
                store.mark_refused(conn, token, self.account.id, str(exc))
            raise

    def _record(self, conn: Any, token: int, mode: Mode, version: int | None
                ) -> Subscription | None:
        return store.record_applied(conn, token, self.account.id, mode, version,
                                    lifecycle_event)

    def _drop_withdrawn(self, token: int) -> None:
        # The request was withdrawn (or moved) before we got to it.
        self._holder.unsubscribe(token)
        log.warning("subscribe dropped, no row account=%s token=%s", self.account.id, token)

    def apply_unsubscribe(self, instrument_token: int, version: int | None) -> None:
        self._holder.unsubscribe(instrument_token)
        with self._pool.connection() as conn:
            row = store.record_applied(
                conn, instrument_token, self.account.id, None, version, lifecycle_event
            )
        if row is not None:
            self.flush_events()

    def flush_events(self) -> int:
        """Publish what the outbox holds for this account; how many went out."""
        with self._pool.connection() as conn:
            return outbox.flush(conn, self.account.id, self._events.publish)

    def reconcile(self) -> int:
        """Converge the sockets to what the database asks; how many tokens needed it.

        Tasks apply each change as it comes; this catches whatever they could not
        (a task lost with its worker, a row written while the database was away,
        a row still pending at start) and announces it the same way.
        """
        states = self._holder.states()
        if any(c.phase is Phase.AUTH_FAILED for c in states):
            # A rotated token not yet tried comes first: with it the account streams
            # again, and moving its subscriptions away would have been for nothing.
            self._pick_up_new_token()
            states = self._holder.states()
        if any(c.phase is Phase.AUTH_FAILED for c in states):
            return self._move_away()
        if not all(c.open for c in states):
            return 0  # a closed socket cannot confirm anything; try next round
        with self._pool.connection() as conn:
            rows = store.list_subscriptions(conn, account_id=self.account.id)
        on_socket = self._holder.tokens()
        # A change younger than this is its task's to apply, in queue order.
        recent = datetime.now(timezone.utc) - timedelta(seconds=RECONCILE_GRACE_S)
        changed = 0
        for row in rows:
            token = row.instrument_token
            if row.updated_at > recent:
                continue
            wanted = row.requested_mode if row.status in (Status.PENDING, Status.ACTIVE) else None
            settled = (
                row.status in (Status.ACTIVE, Status.REMOVED)
                and row.applied_mode is wanted
                and on_socket.get(token) is wanted
            )
            if settled or self._stopping.is_set():
                continue
            if wanted is None:
                self.apply_unsubscribe(token, row.version)
            else:
                try:
                    self.apply_subscribe(token, wanted, row.version)
                except SubscriptionRefused:
                    continue  # recorded with its reason; the next round tries again
            changed += 1
        # Tokens of rows removed in the meantime are not listed: they go.
        for token in on_socket.keys() - {r.instrument_token for r in rows}:
            log.warning("token on socket without a row account=%s token=%s; removing",
                        self.account.id, token)
            self._holder.unsubscribe(token)
            changed += 1
        if changed:
            log.info("reconciled account=%s tokens=%d", self.account.id, changed)
        return changed

    def _reconcile_forever(self) -> None:
        # The first round runs as soon as the sockets open: it confirms what was
        # still pending when the worker (re)started. A socket Kite refused at start
        # never opens: that round moves the subscriptions away instead.
        while not self._stopping.is_set():
            states = self._holder.states()
            if all(c.open for c in states) or any(
                    c.phase is Phase.AUTH_FAILED for c in states):
                break
            self._stopping.wait(0.2)
        while not self._stopping.is_set():
            try:
                # Events a dead predecessor or an outage left behind go out first.
                self.flush_events()
                self.reconcile()
            except Exception:
                log.exception("reconcile failed account=%s", self.account.id)
            self._wake.wait(self.settings.worker_reconcile_s)
            self._wake.clear()

    def _move_away(self) -> int:
        """Hand this account's subscriptions to accounts Kite still accepts.

        Each moved one is queued on its new account, whose worker announces it as
        `subscription_moved`; one with no room anywhere stays here, pending, with its
        reason, and moves on a later round or streams again with a new token.
        """
        placeable = placeable_accounts(self._client, self.settings.key_prefix,
                                       self._accounts)
        with self._pool.connection() as conn:
            moved, stranded = store.move_off(
                conn,
                self.account.id,
                [(a.id, a.capacity) for a in self._accounts],
                placeable,
                f"account {self.account.id}: access token refused by Kite",
            )
        for row in moved:
            self._holder.unsubscribe(row.instrument_token)
            self._sender.subscribe(row.account_id, row.instrument_token, row.requested_mode,
                                   row.version, str(uuid.uuid4()))
        if moved or stranded:
            log.warning("subscriptions moved off account=%s moved=%d stranded=%d",
                        self.account.id, len(moved), len(stranded))
        return len(moved)

    def _beat(self) -> None:
        while not self._stopping.wait(self.settings.worker_heartbeat_s):
            try:
                if not self._lease.renew():
                    log.critical("lease lost account=%s; closing sockets", self.account.id)
                    self._holder.stop()
                    return
                self._pick_up_new_token()
                refused = any(c.phase is Phase.AUTH_FAILED for c in self._holder.states())
                if refused and not self._refused:
                    self._wake.set()  # move the subscriptions away now, not in 30 s
                self._refused = refused
                self._client.set(
                    state_key(self.settings.key_prefix, self.account.id),
                    orjson.dumps(self.state()),
                    px=int(self.settings.worker_lease_s * 1000),
                )
            except redis.RedisError as exc:
                log.warning("heartbeat failed account=%s: %s", self.account.id, exc)

    def _starting_token(self) -> str:
        """The rotated token `ticker token set` stored, else the accounts file's."""
        try:
            override = access_tokens.read_override(
                self._client, self.settings.key_prefix, self.account.id
            )
        except redis.RedisError as exc:
            log.warning("token override unreadable account=%s: %s; using the file's",
                        self.account.id, exc)
            override = None
        return override or self.account.resolve_access_token()

    def _pick_up_new_token(self) -> None:
        """Adopt a rotated access token; reconnect only connections Kite refused.

        A token stored by `ticker token set` is looked for every beat; the accounts
        file only while Kite refuses us. A healthy socket is left alone: the holder
        dials its next client with the new token. A connection that was open before
        the rotation keeps the old token in its client's URL, so when it reconnects
        Kite refuses it once, and it is redialed here with the current token.
        """
        with self._token_lock:
            refused = any(c.phase is Phase.AUTH_FAILED for c in self._holder.states())
            token = self._current_token(refused)
            if token is None:
                return
            if token != self._access_token:
                log.info("new access token account=%s reconnecting_refused=%s",
                         self.account.id, refused)
                self._access_token = token
                self._holder.reauthorize(token)
                if refused:
                    self._redialed_with = token
            elif refused and token != self._redialed_with:
                log.info("refused connections redialed with the current access token "
                         "account=%s", self.account.id)
                self._redialed_with = token
                self._holder.reauthorize(token)

    def _current_token(self, refused: bool) -> str | None:
        """The token to use now, or None to keep ours; redis errors propagate."""
        override = access_tokens.read_override(
            self._client, self.settings.key_prefix, self.account.id
        )
        if override is not None or not refused:
            return override
        try:
            fresh = load_accounts(self.settings.accounts_file).get(self.account.id)
            return fresh.resolve_access_token()
        except TickerError as exc:
            log.warning("accounts file unusable account=%s: %s", self.account.id, exc)
            return None

    def state(self) -> dict[str, Any]:
        connections = self._holder.states()
        stats = self._fanout.stats()
        return {
            "account_id": self.account.id,
            "updated_at": time.time(),
            "connections": [
                {
                    "index": c.index,
                    "open": c.open,
                    "phase": c.phase.value,
                    "tokens": c.tokens,
                    "last_frame_age_s": c.last_frame_age_s,
                    "refusals": c.refusals,
                    "reconnects": c.reconnects,
                }
                for c in connections
            ],
            "ticks_published": stats.ticks_published,
            "frames_received": stats.frames_received,
            "frames_dropped": stats.frames_dropped,
            "publish_failures": stats.publish_failures,
            "backlog": stats.backlog,
        }

"""The instrument universe: every token Kite will stream, from its instruments dump.

The dump is fetched through the official client's `KiteConnect.instruments()` from the
configured REST root (the simulator by default) and trusted for a while: Kite
regenerates it daily, and tokens change as contracts expire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kiteconnect import KiteConnect

from ticker.accounts import Account
from ticker.errors import InstrumentsUnavailable, UnknownInstrument

log = logging.getLogger(__name__)

# After a failed refresh, try again this much sooner than a full TTL.
RETRY_AFTER_FAILURE_S = 60.0


@dataclass(frozen=True)
class Instrument:
    instrument_token: int
    tradingsymbol: str
    exchange: str
    segment: str
    name: str = ""
    instrument_type: str = ""

    @classmethod
    def from_kite(cls, row: Mapping[str, Any]) -> Instrument:
        """From one row as the official client's `instruments()` returns it."""
        return cls(
            instrument_token=int(row["instrument_token"]),
            tradingsymbol=str(row["tradingsymbol"]),
            exchange=str(row["exchange"]),
            segment=str(row["segment"]),
            name=str(row.get("name") or ""),
            instrument_type=str(row.get("instrument_type") or ""),
        )


def fetch_from_kite(account: Account, rest_root: str, access_token: str | None = None
                    ) -> list[Instrument]:
    """Every instrument Kite lists, through the official REST client."""
    kite = KiteConnect(
        account.api_key, access_token=access_token or account.resolve_access_token(),
        root=rest_root,
    )
    return [Instrument.from_kite(row) for row in kite.instruments()]


class InstrumentUniverse:
    """Tokens known to Kite, loaded on first use and refreshed after `ttl_s`.

    A failed refresh keeps serving the previous dump (tokens rarely vanish within a
    day); only when no dump was ever loaded do lookups fail.
    """

    def __init__(
        self,
        fetch: Callable[[], Iterable[Instrument]],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._by_token: dict[int, Instrument] = {}
        self._by_symbol: dict[tuple[str, str], Instrument] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def lookup(self, instrument_token: int) -> Instrument:
        by_token = self._current()
        try:
            return by_token[instrument_token]
        except KeyError:
            raise UnknownInstrument(
                f"instrument_token {instrument_token} is not in Kite's instrument list "
                f"({len(by_token)} instruments); check the token for today's contracts"
            ) from None

    def lookup_symbol(self, exchange: str, tradingsymbol: str) -> Instrument:
        """The instrument Kite lists as `tradingsymbol` on `exchange` (any case).

        Symbols are how people name contracts; tokens are what the socket takes, and
        they change as contracts expire, so the mapping is read from today's dump.
        """
        self._current()
        key = (exchange.upper(), tradingsymbol.upper())
        try:
            return self._by_symbol[key]
        except KeyError:
            raise UnknownInstrument(
                f"tradingsymbol {tradingsymbol!r} on exchange {exchange!r} is not in "
                f"Kite's instrument list ({len(self._by_symbol)} instruments); check the "
                "symbol and its expiry against today's contracts"
            ) from None

    def _current(self) -> dict[int, Instrument]:
        with self._lock:
            stale = self._loaded_at is None or self._clock() - self._loaded_at > self._ttl_s
            if stale:
                self._refresh()
            return self._by_token

    def _refresh(self) -> None:
        started = time.monotonic()
        try:
            fresh = {i.instrument_token: i for i in self._fetch()}
        except Exception as exc:  # any client, network or parse failure
            if not self._by_token:
                raise InstrumentsUnavailable(
                    f"could not load Kite's instrument list: {exc}; "
                    "check TICKER_KITE_REST_ROOT and the account's access token"
                ) from exc
            log.warning("instruments refresh failed; keeping %d known: %s",
                        len(self._by_token), exc)
            self._loaded_at = self._clock() - self._ttl_s + RETRY_AFTER_FAILURE_S
            return
        self._by_token = fresh
        self._by_symbol = {(i.exchange.upper(), i.tradingsymbol.upper()): i
                           for i in fresh.values()}
        self._loaded_at = self._clock()
        log.info("instruments loaded count=%d seconds=%.2f",
                 len(fresh), time.monotonic() - started)

"""Kite's historical candles through the official client, paced per api_key.

Kite allows 3 historical requests a second per api_key and answers more with 429
(KITE-NOTES §1.10). The pace is kept in Redis, so every backfill process of every
host shares it.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from decimal import Decimal
from typing import Any

import redis
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors
from pyrate_limiter import Limiter, Rate, RedisBucket

from ticker.accounts import Account
from ticker.backfill import Candle, Span
from ticker.errors import TickerError
from ticker.ticks import IST
from ticker.worker_metrics import HISTORICAL_REQUESTS

log = logging.getLogger(__name__)

# Longest a request waits for its turn before the task gives up and retries later.
MAX_WAIT_FOR_TURN_S = 30


class HistoricalUnavailable(TickerError):
    """Kite could not answer now (429, 5xx or network); worth retrying later."""


class HistoricalRefused(TickerError):
    """Kite refused the request itself (token, permission, input); retrying won't help."""


class HistoricalPacer:
    """Lets at most `requests` historical calls per `window_s` through, per api_key."""

    def __init__(self, client: redis.Redis, key_prefix: str, requests_per_window: int,
                 window_s: float) -> None:
        self._client = client
        self._key_prefix = key_prefix
        self._rate = Rate(requests_per_window, int(window_s * 1000))
        self._limiters: dict[str, Limiter] = {}
        self._lock = threading.Lock()

    def wait_turn(self, api_key: str) -> None:
        if not self._limiter(api_key).try_acquire(
            "historical", blocking=True, timeout=MAX_WAIT_FOR_TURN_S
        ):
            raise HistoricalUnavailable(
                f"no historical request slot for api_key {api_key!r} "
                f"within {MAX_WAIT_FOR_TURN_S} s; too many backfills at once"
            )

    def _limiter(self, api_key: str) -> Limiter:
        with self._lock:
            if api_key not in self._limiters:
                bucket = RedisBucket.init(
                    [self._rate], self._client, f"{self._key_prefix}historical:{api_key}"
                )
                self._limiters[api_key] = Limiter(bucket)
            return self._limiters[api_key]


class KiteHistorical:
    """One account's historical-candle client."""

    def __init__(self, account: Account, rest_root: str, pacer: HistoricalPacer,
                 access_token: str | None = None) -> None:
        self._api_key = account.api_key
        # A token rotated with `ticker token set` wins over the accounts file's.
        self._kite = KiteConnect(
            account.api_key, access_token=access_token or account.resolve_access_token(),
            root=rest_root,
        )
        self._pacer = pacer

    def fetch(self, instrument_token: int, interval: str, span: Span, oi: bool
              ) -> list[Candle]:
        self._pacer.wait_turn(self._api_key)
        try:
            rows = self._kite.historical_data(
                instrument_token,
                _naive_ist(span.start),
                _naive_ist(span.end),
                interval,
                continuous=False,
                oi=oi,
            )
        except kite_errors.KiteException as exc:
            HISTORICAL_REQUESTS.labels(code=str(exc.code)).inc()
            if exc.code == 429 or exc.code >= 500:
                raise HistoricalUnavailable(f"Kite answered {exc.code}: {exc}") from exc
            raise HistoricalRefused(f"Kite refused ({type(exc).__name__}): {exc}") from exc
        except requests.RequestException as exc:
            HISTORICAL_REQUESTS.labels(code="network").inc()
            raise HistoricalUnavailable(f"Kite unreachable: {exc}") from exc
        HISTORICAL_REQUESTS.labels(code="200").inc()
        log.debug("candles fetched token=%s interval=%s from=%s to=%s count=%d",
                  instrument_token, interval, span.start, span.end, len(rows))
        return [_candle(instrument_token, interval, row) for row in rows]


def _naive_ist(moment: datetime) -> datetime:
    # The client formats datetimes without converting their zone (KITE-NOTES §1.10),
    # and Kite reads them as IST: convert first, then drop the zone.
    return moment.astimezone(IST).replace(tzinfo=None)


def _candle(instrument_token: int, interval: str, row: dict[str, Any]) -> Candle:
    return Candle(
        instrument_token=instrument_token,
        interval=interval,
        start=row["date"],
        open=Decimal(str(row["open"])),
        high=Decimal(str(row["high"])),
        low=Decimal(str(row["low"])),
        close=Decimal(str(row["close"])),
        volume=int(row["volume"]),
        oi=int(row["oi"]) if "oi" in row else None,
    )

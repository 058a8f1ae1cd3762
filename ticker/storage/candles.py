"""The candles table: historical candles, upserted so a second fetch adds nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from ticker.backfill import Candle

_UPSERT = """
INSERT INTO candles (instrument_token, interval, start_at, open, high, low, close,
                     volume, oi)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::numeric[],
                     %s::numeric[], %s::numeric[], %s::numeric[], %s::bigint[],
                     %s::bigint[])
ON CONFLICT (instrument_token, interval, start_at) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
    close = EXCLUDED.close, volume = EXCLUDED.volume, oi = EXCLUDED.oi
WHERE (candles.open, candles.high, candles.low, candles.close, candles.volume,
       candles.oi)
      IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                        EXCLUDED.volume, EXCLUDED.oi)
RETURNING (xmax = 0) AS inserted
"""


def upsert(conn: psycopg.Connection[Any], candles: list[Candle]) -> tuple[int, int]:
    """Store candles in one statement; return (new rows, rows whose values changed).

    An identical candle is left alone, so fetching a span twice writes nothing.
    """
    if not candles:
        return 0, 0
    columns = (
        [c.instrument_token for c in candles],
        [c.interval for c in candles],
        [c.start for c in candles],
        [c.open for c in candles],
        [c.high for c in candles],
        [c.low for c in candles],
        [c.close for c in candles],
        [c.volume for c in candles],
        [c.oi for c in candles],
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_UPSERT, columns)
        flags = [row[0] for row in cur.fetchall()]
    inserted = sum(flags)
    return inserted, len(flags) - inserted


def last_start(conn: psycopg.Connection[Any], instrument_token: int, interval: str
               ) -> datetime | None:
    row = conn.execute(
        "SELECT max(start_at) FROM candles WHERE instrument_token = %s AND interval = %s",
        (instrument_token, interval),
    ).fetchone()
    return row[0] if row else None


def between(
    conn: psycopg.Connection[Any],
    instrument_token: int,
    interval: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[Candle]:
    """Candles starting within [start, end], oldest first, at most `limit`."""
    rows = conn.execute(
        """SELECT start_at, open, high, low, close, volume, oi FROM candles
           WHERE instrument_token = %s AND interval = %s AND start_at BETWEEN %s AND %s
           ORDER BY start_at LIMIT %s""",
        (instrument_token, interval, start, end, limit),
    ).fetchall()
    return [
        Candle(instrument_token, interval, r[0], r[1], r[2], r[3], r[4], r[5], r[6])
        for r in rows
    ]

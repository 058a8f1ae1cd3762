"""The record of historical requests behind GET /_sim/historical."""

from __future__ import annotations

from ticker.simulator.historical_log import HistoricalLog, HistoricalRequest


def request(status: int = 200, at: float = 1.0) -> HistoricalRequest:
    return HistoricalRequest(
        at=at,
        api_key="key_alpha",
        instrument_token=256265,
        interval="minute",
        from_="2025-06-02 09:15:00",
        to="2025-06-02 15:30:00",
        oi=False,
        status=status,
        candles=375 if status == 200 else 0,
    )


def test_a_request_reads_back_with_kite_s_query_names():
    assert request().to_json() == {
        "at": 1.0,
        "api_key": "key_alpha",
        "instrument_token": 256265,
        "interval": "minute",
        "from": "2025-06-02 09:15:00",
        "to": "2025-06-02 15:30:00",
        "oi": False,
        "status": 200,
        "candles": 375,
    }


def test_the_oldest_requests_are_dropped_but_still_counted():
    log = HistoricalLog(kept=3)

    for at, status in enumerate([200, 200, 429, 429, 200]):
        log.add(request(status, float(at)))

    assert [r["at"] for r in log.snapshot()] == [2.0, 3.0, 4.0]
    assert log.stats() == {
        "historical_requests": 5,
        "historical_by_status": {"200": 3, "429": 2},
    }


def test_clearing_forgets_requests_and_counts():
    log = HistoricalLog()
    log.add(request(403))

    log.clear()

    assert log.snapshot() == [] and len(log) == 0
    assert log.stats() == {"historical_requests": 0, "historical_by_status": {}}

"""The simulator's queue of historical failures a test asked for."""

import pytest

from ticker.simulator.historical_faults import HistoricalFaults


def test_queued_failures_are_taken_in_order_for_their_key_only():
    faults = HistoricalFaults()
    faults.fail_next("key_a", 503, 2)
    faults.fail_next("key_a", 429, 1)

    assert faults.take("key_b") is None
    assert [faults.take("key_a") for _ in range(4)] == [503, 503, 429, None]


@pytest.mark.parametrize(("status", "count"), [(404, 1), (200, 1), (503, 0)])
def test_a_status_kite_does_not_fail_with_or_no_count_is_refused(status, count):
    with pytest.raises(ValueError):
        HistoricalFaults().fail_next("key_a", status, count)

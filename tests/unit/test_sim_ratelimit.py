"""Kite's historical rate limit: a sliding one-second window per api_key."""

from __future__ import annotations

import math

import pytest

from ticker.simulator.ratelimit import SlidingWindowLimit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def limit(clock):
    return SlidingWindowLimit(3, 1.0, clock=clock)


def test_three_requests_pass_and_the_fourth_in_the_same_second_is_refused(limit):
    assert [limit.allow("k") for _ in range(5)] == [True, True, True, False, False]


def test_the_window_slides_with_each_accepted_request(limit, clock):
    for at in (0.0, 0.4, 0.8):
        clock.now = 1000.0 + at
        assert limit.allow("k")

    clock.now = 1000.99
    assert not limit.allow("k")
    clock.now = 1001.0
    assert limit.allow("k"), "the first request has just left the window"
    assert not limit.allow("k")
    clock.now = 1001.5
    assert limit.allow("k"), "so has the second"


def test_refused_requests_do_not_keep_the_window_full(limit, clock):
    for _ in range(3):
        limit.allow("k")
    for step in range(1, 10):
        clock.now = 1000.0 + step * 0.1
        assert not limit.allow("k")

    clock.now = 1001.0

    assert [limit.allow("k") for _ in range(4)] == [True, True, True, False]


def test_each_key_has_its_own_window(limit):
    for _ in range(3):
        limit.allow("alpha")

    assert not limit.allow("alpha")
    assert limit.allow("beta")


@pytest.mark.parametrize(
    ("rate", "requests", "window_s"),
    [(3, 3, 1.0), (10, 10, 1.0), (2.5, 2, 1.0), (0.5, 1, 2.0)],
)
def test_a_rate_per_second_becomes_requests_per_window(rate, requests, window_s):
    limit = SlidingWindowLimit.per_second(rate)

    assert (limit.limit, limit.window_s) == (requests, window_s)


def test_an_infinite_rate_means_no_limit_and_a_non_positive_one_is_refused():
    assert SlidingWindowLimit.per_second(math.inf) is None
    for bad in (0, -1, math.nan, -math.inf):
        with pytest.raises(ValueError, match="must be positive"):
            SlidingWindowLimit.per_second(bad)

import pytest

from ticker.capacity import AccountLoad, choose_account
from ticker.errors import CapacityExhausted, NoLiveWorker


def test_the_live_account_with_most_free_room_is_chosen():
    loads = [
        AccountLoad("a", capacity=10, used=7, alive=True),
        AccountLoad("b", capacity=10, used=2, alive=True),
        AccountLoad("c", capacity=10, used=0, alive=False),
    ]

    assert choose_account(loads) == "b"


def test_equal_room_goes_to_the_first_account_in_file_order():
    loads = [AccountLoad("a", 10, 3, True), AccountLoad("b", 10, 3, True)]

    assert choose_account(loads) == "a"


def test_free_room_is_compared_not_usage_when_capacities_differ():
    loads = [AccountLoad("small", 5, 0, True), AccountLoad("big", 100, 50, True)]

    assert choose_account(loads) == "big"


def test_full_live_accounts_refuse_with_capacity_exhausted():
    loads = [AccountLoad("a", 2, 2, True), AccountLoad("b", 50, 0, False)]

    with pytest.raises(CapacityExhausted, match="all 1 live accounts are full"):
        choose_account(loads)


def test_no_live_worker_is_its_own_error():
    with pytest.raises(NoLiveWorker, match="ticker worker --account"):
        choose_account([AccountLoad("a", 2, 0, False)])

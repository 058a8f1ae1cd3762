"""Where a new subscription goes: the live account with the most free socket room."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ticker.errors import CapacityExhausted, NoLiveWorker


@dataclass(frozen=True)
class AccountLoad:
    """One account's socket capacity, how much of it is taken, and its worker's state."""

    account_id: str
    capacity: int
    used: int
    alive: bool

    @property
    def free(self) -> int:
        return max(self.capacity - self.used, 0)


def choose_account(loads: Iterable[AccountLoad]) -> str:
    """The id of the live account with the most free room; ties go to the first listed.

    Spreading by free room rather than filling one account first keeps each account's
    sockets light and leaves room everywhere when a worker goes down.
    """
    loads = list(loads)
    live = [load for load in loads if load.alive]
    if not live:
        raise NoLiveWorker(
            "no account worker is running; start one with `ticker worker --account ID` "
            f"(configured accounts: {[load.account_id for load in loads]})"
        )
    best = max(live, key=lambda load: load.free)  # max keeps the first of equals
    if best.free == 0:
        raise CapacityExhausted(
            f"all {len(live)} live accounts are full "
            f"({sum(load.capacity for load in live)} instruments); "
            "remove a subscription or add an account"
        )
    return best.account_id

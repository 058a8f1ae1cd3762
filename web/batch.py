"""POST /subscriptions/batch: many instruments in one request, answered item by item.

A malformed item refuses the whole request (422, nothing recorded), as any bad body
does. An item that is well formed but cannot be served (unknown to Kite, named twice,
no room) is refused on its own, with the code a single POST would get, and the
rest of the batch stands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ticker.errors import TickerError, UnknownInstrument
from ticker.instruments import Instrument
from ticker.service import ChangeOutcome, SubscriptionService
from ticker.subscriptions import Mode, Subscription
from web.errors import ApiError, describe
from web.schemas import BatchSubscribeRequest, InstrumentRef

Render = Callable[[list[Subscription]], list[dict[str, Any]]]


def subscribe_batch(service: SubscriptionService, body: BatchSubscribeRequest,
                    render: Render) -> tuple[dict[str, Any], int]:
    """The answer and its status: 202 when any item was queued, else 200."""
    for index, ref in enumerate(body.instruments):
        problem = ref.problem()
        if problem is not None:
            field = f"instruments.{index}.{problem[0]}"
            raise ApiError(422, "invalid_field", f"{field}: {problem[1]}", field=field)

    refusals: dict[int, dict[str, Any]] = {}
    wanted: list[tuple[int, Instrument, Mode | None]] = []
    seen: dict[int, int] = {}
    for index, ref in enumerate(body.instruments):
        try:
            instrument = _resolve(service, ref)
        except UnknownInstrument as exc:
            field = "instrument_token" if ref.instrument_token is not None else "tradingsymbol"
            refusals[index] = _refusal(exc, f"instruments.{index}.{field}")
            continue
        token = instrument.instrument_token
        if token in seen:
            refusals[index] = {
                "code": "duplicate_instrument",
                "message": f"instrument_token {token} is also item {seen[token]} of this "
                           "batch; name each instrument once",
                "field": f"instruments.{index}",
            }
            continue
        seen[token] = index
        wanted.append((index, instrument, ref.requested_mode or body.requested_mode))

    outcomes = service.subscribe_many([(i, mode) for _, i, mode in wanted], body.client_id)
    by_index = {index: outcome for (index, _, _), outcome in zip(wanted, outcomes, strict=True)}
    subscriptions = render([o.subscription for o in outcomes if isinstance(o, ChangeOutcome)])
    rendered = iter(subscriptions)

    results = []
    for index, ref in enumerate(body.instruments):
        outcome = by_index.get(index)
        if isinstance(outcome, ChangeOutcome):
            results.append({
                "index": index,
                "outcome": "queued" if outcome.accepted else "unchanged",
                "instrument_token": outcome.subscription.instrument_token,
                "subscription": next(rendered),
                "error": None,
            })
        else:
            refusal = refusals.get(index) or _refusal(outcome, f"instruments.{index}")
            results.append({
                "index": index,
                "outcome": "refused",
                "instrument_token": ref.instrument_token,
                "subscription": None,
                "error": refusal,
            })
    counts = {kind: sum(1 for r in results if r["outcome"] == kind)
              for kind in ("queued", "unchanged", "refused")}
    answer = {"client_id": body.client_id, "results": results, **counts}
    return answer, 202 if counts["queued"] else 200


def _resolve(service: SubscriptionService, ref: InstrumentRef) -> Instrument:
    return service.resolve(ref.instrument_token, ref.exchange, ref.tradingsymbol)


def _refusal(exc: Exception | None, field: str) -> dict[str, Any]:
    known = describe(exc) if isinstance(exc, TickerError) else None
    code = known[1] if known else "refused"
    return {"code": code, "message": str(exc), "field": field}

"""Request bodies and query strings the API accepts, validated by pydantic."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from ticker.backfill import INTERVALS
from ticker.subscriptions import DEFAULT_CLIENT_ID, MAX_INSTRUMENT_TOKEN, Mode, Status
from ticker.ticks import IST

MAX_STREAM_ID_PART = 2**64 - 1


# A requester's name: what a back end calls itself, kept plain for logs and URLs.
CLIENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
# Kite's symbols are upper-case letters, digits and a few marks (M&M, NIFTY 50).
TRADINGSYMBOL_PATTERN = r"^[A-Za-z0-9&._ -]{1,64}$"
EXCHANGE_PATTERN = r"^[A-Za-z]{2,8}$"
# Kite takes at most 3,000 instruments a connection: a batch fills one at most.
MAX_BATCH = 3000


class _ModeField(BaseModel):
    @field_validator("requested_mode", mode="before", check_fields=False)
    @classmethod
    def _any_case(cls, value: object) -> object:
        if value is None and not cls.model_fields["requested_mode"].is_required():
            return None
        if not isinstance(value, str):
            raise ValueError("must be one of LTP, QUOTE or FULL")
        try:
            return Mode.parse(value)
        except ValueError:
            raise ValueError(f"must be one of LTP, QUOTE or FULL, not {value!r}") from None


class InstrumentRef(_ModeField):
    """One instrument, by token or by exchange and tradingsymbol (as Kite lists it)."""

    model_config = ConfigDict(extra="forbid")

    instrument_token: StrictInt | None = Field(None, ge=1, le=MAX_INSTRUMENT_TOKEN)
    tradingsymbol: StrictStr | None = Field(None, pattern=TRADINGSYMBOL_PATTERN)
    exchange: StrictStr | None = Field(None, pattern=EXCHANGE_PATTERN)
    # None keeps a live subscription's mode, and means QUOTE (Kite's own default)
    # for a new one, so "make sure it is subscribed" never changes a mode.
    requested_mode: Mode | None = None

    def problem(self) -> tuple[str, str] | None:
        """The field at fault and why, when the instrument is not named exactly once."""
        if self.instrument_token is not None:
            if self.tradingsymbol is not None or self.exchange is not None:
                return ("tradingsymbol", ("name the instrument by instrument_token or "
                                          "by tradingsymbol and exchange, not both"))
            return None
        if self.tradingsymbol is None:
            return ("instrument_token",
                    "Field required (or give tradingsymbol and exchange)")
        if self.exchange is None:
            return ("exchange", "Field required with tradingsymbol (NSE, NFO, BSE, ...)")
        return None


class SubscribeRequest(InstrumentRef):
    # Who asks; a token streams while any requester holds it, in the highest mode.
    client_id: StrictStr = Field(DEFAULT_CLIENT_ID, pattern=CLIENT_ID_PATTERN)


class BatchSubscribeRequest(_ModeField):
    """POST /subscriptions/batch: many instruments for one requester."""

    model_config = ConfigDict(extra="forbid")

    instruments: list[InstrumentRef] = Field(min_length=1, max_length=MAX_BATCH)
    client_id: StrictStr = Field(DEFAULT_CLIENT_ID, pattern=CLIENT_ID_PATTERN)
    # The mode of every item that names none of its own.
    requested_mode: Mode | None = None


class ModeChange(_ModeField):
    """PATCH /subscriptions/<token>: one requester's new mode."""

    model_config = ConfigDict(extra="forbid")

    requested_mode: Mode
    client_id: StrictStr = Field(DEFAULT_CLIENT_ID, pattern=CLIENT_ID_PATTERN)


class RequesterQuery(BaseModel):
    """DELETE /subscriptions/<token>?client_id=: which requester leaves."""

    model_config = ConfigDict(extra="forbid")

    client_id: StrictStr = Field(DEFAULT_CLIENT_ID, pattern=CLIENT_ID_PATTERN)


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: StrictStr | None = None
    status: Status | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class EventsQuery(BaseModel):
    """`after` is a stream id as events carry it in `stream_id`; 0 means from the oldest.

    As with Redis' own XREAD, milliseconds alone stand for the first id of that
    millisecond, so `after=<unix ms>` replays what came after that moment.
    """

    model_config = ConfigDict(extra="forbid")

    after: str = Field("0", pattern=r"^[0-9]{1,20}(-[0-9]{1,20})?$")
    limit: int = Field(1000, ge=1, le=10_000)

    @field_validator("after")
    @classmethod
    def _redis_stream_id(cls, value: str) -> str:
        # Redis stream ids are two unsigned 64-bit numbers, milliseconds-sequence.
        if any(int(part) > MAX_STREAM_ID_PART for part in value.split("-")):
            raise ValueError("each part of a stream id must be below 2**64")
        if value == "0" or "-" in value:
            return value
        return f"{value}-0"


class TokenPath(BaseModel):
    instrument_token: int = Field(ge=1, le=MAX_INSTRUMENT_TOKEN)

    @field_validator("instrument_token", mode="before")
    @classmethod
    def _digits_only(cls, value: object) -> object:
        if isinstance(value, str) and not value.isdigit():
            raise ValueError("must be a positive whole number")
        return value


class CandlesQuery(BaseModel):
    """`from`/`to` are ISO 8601; a time without an offset is read as IST, and a
    `to` without a time is the end of that day."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    interval: Literal[INTERVALS] = "minute"  # type: ignore[valid-type]
    start: datetime | None = Field(None, alias="from")
    end: datetime | None = Field(None, alias="to")
    limit: int = Field(10_000, ge=1, le=100_000)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("end", mode="before")
    @classmethod
    def _a_date_means_its_whole_day(cls, value: object) -> object:
        # As Kite's own historical API reads it: `to=2026-12-03` includes that day.
        if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return f"{value}T23:59:59.999999"
        return value

    @field_validator("start", "end")
    @classmethod
    def _ist_when_naive(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=IST)
        return value

    @field_validator("end")
    @classmethod
    def _not_before_start(cls, value: datetime | None, info: ValidationInfo
                          ) -> datetime | None:
        start = info.data.get("start")
        if value is not None and start is not None and start > value:
            raise ValueError("must not be before from")
        return value

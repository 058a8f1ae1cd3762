"""The errors callers of the ticker core can act on.

`web/` maps them to HTTP answers and `tasks/` to retry or drop; each message names the
value at fault and what to do about it.
"""


class TickerError(Exception):
    """Base of every error the ticker service raises on purpose."""


class ConfigInvalid(TickerError):
    """The accounts file or another setting cannot be used as given."""


class UnknownAccount(TickerError):
    """An account id that the accounts file does not define."""


class UnknownInstrument(TickerError):
    """An instrument token that the instrument universe does not hold."""


class InstrumentsUnavailable(TickerError):
    """The instrument universe could not be fetched from Kite's REST API."""


class CapacityExhausted(TickerError):
    """No live account has room on its sockets for another instrument."""


class NoLiveWorker(TickerError):
    """No account worker holds its lease, so nothing could apply a change."""


class SubscriptionNotFound(TickerError):
    """No pending or live subscription exists for an instrument token."""


class RequesterNotFound(SubscriptionNotFound):
    """The token is subscribed, but not by the requester that asked."""


class MalformedFrame(TickerError):
    """A binary ticker frame whose lengths do not add up."""


class SocketUnavailable(TickerError):
    """An account's socket did not open in time to confirm a change."""


class SubscriptionRefused(TickerError):
    """Kite answered a subscribe with an error text frame instead of streaming it."""

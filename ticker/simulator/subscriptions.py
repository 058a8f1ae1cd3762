"""What a ticker client asks for, and the subscription table it changes.

Clients send JSON text frames: `{"a": "subscribe", "v": [tokens]}`,
`{"a": "unsubscribe", "v": [tokens]}` and `{"a": "mode", "v": [mode, [tokens]]}`.
The rules follow Kite: a subscribed token streams in "quote" mode until told
otherwise, `mode` on an unsubscribed token subscribes it, unknown tokens are
ignored silently, and tokens past the per-connection limit are refused with an
error text while the connection stays up.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable
from dataclasses import dataclass

from ticker.errors import TickerError
from ticker.simulator.packets import MODES, QUOTE

SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
MODE = "mode"
ACTIONS = frozenset({SUBSCRIBE, UNSUBSCRIBE, MODE})


class InvalidCommand(TickerError):
    """A client text frame that is not one of the ticker's three commands."""


@dataclass(frozen=True, slots=True)
class Command:
    action: str
    tokens: tuple[int, ...]
    mode: str | None = None


def parse_command(text: str | bytes) -> Command:
    """The command in one text frame; raises InvalidCommand with the reason."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise InvalidCommand(f"Invalid message: not JSON: {_clip(text)!r}.") from None
    if not isinstance(message, dict) or message.get("a") not in ACTIONS:
        raise InvalidCommand(
            f'Invalid message: expected {{"a": one of {sorted(ACTIONS)}, "v": ...}}, '
            f"got {_clip(text)!r}."
        )
    action, value = message["a"], message.get("v")

    if action == MODE:
        if not (
            isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)
        ):
            raise InvalidCommand(
                f"Invalid message: mode takes [mode, [tokens]], got {_clip(value)!r}."
            )
        mode, tokens = value
        if mode not in MODES:
            raise InvalidCommand(f"Invalid mode {mode!r}: use one of {sorted(MODES)}.")
        return Command(action, _tokens(tokens), mode)

    if not isinstance(value, list):
        raise InvalidCommand(
            f"Invalid message: {action} takes a list of tokens, got {_clip(value)!r}."
        )
    return Command(action, _tokens(value))


class Subscriptions:
    """One connection's tokens and their modes, in the order they were added."""

    def __init__(self, limit: int, known: Container[int]) -> None:
        self.limit = limit
        self._known = known
        self.modes: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.modes)

    def apply(self, command: Command) -> str | None:
        """Change the table; the error text for the client if tokens were refused."""
        if command.action == UNSUBSCRIBE:
            for token in command.tokens:
                self.modes.pop(token, None)
            return None

        mode = command.mode or QUOTE
        tokens = [t for t in command.tokens if t in self._known]
        room = self.limit - len(self.modes)
        refused = 0
        for token in tokens:
            if token in self.modes:
                self.modes[token] = mode
            elif room > 0:
                self.modes[token] = mode
                room -= 1
            else:
                refused += 1
        if refused:
            return f"Can't subscribe to more than {self.limit} instruments."
        return None


def _tokens(values: Iterable[object]) -> tuple[int, ...]:
    # Anything but an integer cannot name an instrument, so it is ignored like an
    # unknown token. bool is an int subclass and is excluded on purpose.
    ints = (v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return tuple(dict.fromkeys(ints))


def _clip(value: object, limit: int = 120) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."

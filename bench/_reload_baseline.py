"""The old way to add one instrument, for comparison: reload the whole socket.

Run as a subprocess by `bench.subscribe_latency`, with its parameters as JSON on
stdin. With the official `KiteTicker` and nothing else, it streams `tokens` on one
connection, then, `reloads` times, does what a reload-everything service does for
any change: close the socket, open a new one, subscribe every token again. Each
reload is done as fast as the client allows (no reconnect back-off), which is the
best case for this approach, and starts `lead_s` before one of the simulator's tick
cycles: the worst phase, where the short time with nothing subscribed covers a cycle. It prints one JSON line with, per reload, how long
until every token ticked again and the gap each token's ticks saw.
"""

from __future__ import annotations

import bisect
import json
import statistics
import sys
import threading
import time
from typing import Any

from kiteconnect import KiteTicker
from twisted.internet import reactor

from bench._clients import sleep_until_before_cycle

WARM_UP_TIMEOUT_S = 60.0
RELOAD_TIMEOUT_S = 60.0


class _Stream:
    """Arrival times of every frame's ticks, in arrival order."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[list[int]] = []
        self.lock = threading.Lock()

    def on_ticks(self, _ws: Any, ticks: list[dict[str, Any]]) -> None:
        arrived = time.monotonic()
        tokens = [tick["instrument_token"] for tick in ticks]
        with self.lock:
            self.times.append(arrived)
            self.tokens.append(tokens)

    def last_before(self, moment: float) -> dict[int, float]:
        seen: dict[int, float] = {}
        with self.lock:
            for i in range(bisect.bisect_right(self.times, moment) - 1, -1, -1):
                for token in self.tokens[i]:
                    seen.setdefault(token, self.times[i])
        return seen

    def first_after(self, moment: float) -> dict[int, float]:
        seen: dict[int, float] = {}
        with self.lock:
            for i in range(bisect.bisect_right(self.times, moment), len(self.times)):
                for token in self.tokens[i]:
                    seen.setdefault(token, self.times[i])
        return seen


def _open(params: dict[str, Any], stream: _Stream, first: bool
          ) -> tuple[KiteTicker, threading.Event, threading.Event, list[float]]:
    ticker = KiteTicker(params["api_key"], params["access_token"], root=params["ws_root"])
    subscribed = threading.Event()
    closed = threading.Event()
    marks: list[float] = []
    tokens = params["tokens"]

    def on_connect(ws: KiteTicker, _response: Any) -> None:
        ws.subscribe(tokens)
        ws.set_mode(params["mode"], tokens)
        marks.append(time.monotonic())
        subscribed.set()

    ticker.on_connect = on_connect
    ticker.on_ticks = stream.on_ticks
    ticker.on_close = lambda ws, code, reason: closed.set()
    if first:
        ticker.connect(threaded=True)
    else:
        reactor.callFromThread(ticker.connect, True)
    return ticker, subscribed, closed, marks


def _wait_all_after(stream: _Stream, tokens: list[int], moment: float,
                    timeout_s: float) -> dict[int, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = stream.first_after(moment)
        if len(seen.keys() & set(tokens)) == len(tokens) or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def run(params: dict[str, Any]) -> dict[str, Any]:
    tokens: list[int] = params["tokens"]
    interval_s: float = params["tick_interval_s"]
    stream = _Stream()
    ticker, subscribed, closed, _ = _open(params, stream, first=True)
    if not subscribed.wait(WARM_UP_TIMEOUT_S):
        raise RuntimeError("baseline client never connected")
    started = time.monotonic()
    warm = _wait_all_after(stream, tokens, started, WARM_UP_TIMEOUT_S)
    if len(warm) < len(tokens):
        raise RuntimeError(f"only {len(warm)} of {len(tokens)} tokens ever ticked")
    time.sleep(2 * interval_s)

    reloads = []
    for _ in range(params["reloads"]):
        sleep_until_before_cycle(interval_s, params["lead_s"])
        began = time.monotonic()
        reactor.callFromThread(ticker.close, 1000, "reload")
        closed.wait(RELOAD_TIMEOUT_S)
        closed_at = time.monotonic()
        ticker, subscribed, closed, marks = _open(params, stream, first=False)
        subscribed.wait(RELOAD_TIMEOUT_S)
        after = _wait_all_after(stream, tokens, began, RELOAD_TIMEOUT_S)
        before = stream.last_before(began)
        gaps = [after[t] - before[t] for t in tokens if t in after and t in before]
        missed = [max(round(gap / interval_s) - 1, 0) for gap in gaps]
        reloads.append({
            "closed_s": closed_at - began,
            "resubscribed_s": (marks[0] - began) if marks else None,
            "all_ticking_s": max(after[t] for t in tokens if t in after) - began,
            "tokens_back": sum(1 for t in tokens if t in after),
            "gap_median_s": statistics.median(gaps) if gaps else None,
            "gap_max_s": max(gaps) if gaps else None,
            "tokens_missing_a_tick": sum(1 for m in missed if m > 0),
            "ticks_missed": sum(missed),
        })
        time.sleep(2 * interval_s)
    reactor.callFromThread(ticker.close, 1000, "done")
    closed.wait(5)
    return {"tokens": len(tokens), "reloads": reloads}


def main() -> None:
    params = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(run(params)) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

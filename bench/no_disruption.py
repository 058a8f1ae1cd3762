"""No disruption: steady instruments keep ticking while others come and go.

    .venv/bin/python -m bench.no_disruption             # about 1 minute
    .venv/bin/python -m bench.no_disruption --churn 3000

100 steady FULL subscriptions tick 4 times a second while --churn other tokens are
subscribed and unsubscribed on the same account. Measured: the longest gap in any
steady instrument's ticks, and every text frame the simulator received that names a
steady instrument after the churn began (there must be none).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench._clients import (
    CREATED,
    REMOVED,
    Api,
    EventWatch,
    TickTap,
    get_json,
    place_many,
)
from bench._instruments import write_instruments_csv
from bench._report import Report, describe_latency, latency_summary
from bench._stack import (
    BenchAccount,
    CpuMeter,
    Profiles,
    env_overrides,
    exit_cleanly_on_sigterm,
    running_stack,
    stack_process_groups,
)

ACCOUNT = BenchAccount("n")
EVENT_TIMEOUT_S = 30.0

METHOD = """
One `ticker run` stack with its own ports, database and Redis db, one simulated
account (3 connections x 3,000), a generated NFO universe, the simulator ticking every
--tick-interval s (default 0.25: 4 ticks a second per instrument). --steady FULL
subscriptions are placed first and tick throughout. Then --clients threads each take
a share of --churn other tokens and, for each, POST /subscriptions, wait for
`subscription_created`, DELETE it, wait for `subscription_removed`: as many
subscribes as unsubscribes, all on the steady tokens' account.

Gaps: a raw-socket listener on the ticks channel records every tick's token and
arrival from before the churn to after it; for each steady token, the longest time
between two consecutive ticks over the churn (the last tick before it included) is
compared with the tick interval. Frames: GET /_sim/connections lists every text frame
each connection received, with its time; every subscribe, mode or unsubscribe frame
received after the churn began is checked for steady tokens.
"""


def churn(port: int, watch: EventWatch, tokens: Sequence[int], clients: int,
          mode: str) -> list[float]:
    """Subscribe then unsubscribe each token; the subscribe latencies."""
    def client(share: Sequence[int]) -> list[float]:
        api = Api(port)
        latencies = []
        for token in share:
            created = watch.expect(CREATED, token)
            removed = watch.expect(REMOVED, token)
            started = time.monotonic()
            status, body = api.subscribe(token, mode)
            if status != 202 or not created.done.wait(EVENT_TIMEOUT_S):
                raise RuntimeError(f"subscribe {token}: {status} {body}")
            latencies.append(created.at - started)
            status, body = api.unsubscribe(token)
            if status != 202 or not removed.done.wait(EVENT_TIMEOUT_S):
                raise RuntimeError(f"unsubscribe {token}: {status} {body}")
        return latencies

    with ThreadPoolExecutor(clients) as pool:
        shares = pool.map(client, [tokens[i::clients] for i in range(clients)])
        return [x for share in shares for x in share]


def frames_naming(connections: list[dict[str, Any]], tokens: set[int], since: float
                  ) -> dict[str, Any]:
    """Text frames received since `since` (unix time) that name any of `tokens`."""
    naming, total, complete = [], 0, True
    for connection in connections:
        kept = connection["messages"]
        if connection["messages_received"] > len(kept) and kept and kept[0]["at"] >= since:
            complete = False  # older frames were dropped from the simulator's record
        for message in kept:
            if message["at"] < since:
                continue
            total += 1
            value = (message.get("message") or {}).get("v")
            named = value[1] if message["message"].get("a") == "mode" else value
            if any(int(t) in tokens for t in named or []):
                naming.append(message["text"][:200])
    return {"frames_since_start": total, "naming_steady": len(naming),
            "examples": naming[:3], "record_complete": complete}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.no_disruption",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steady", type=int, default=100)
    parser.add_argument("--churn", type=int, default=1000,
                        help="tokens subscribed and then unsubscribed")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tick-interval", type=float, default=0.25)
    parser.add_argument("--mode", default="FULL", choices=["LTP", "QUOTE", "FULL"])
    parser.add_argument("--profile", type=Path, help="write py-spy profiles here")
    parser.add_argument("--profile-format", default="speedscope",
                        choices=["speedscope", "raw", "flamegraph"])
    parser.add_argument("--env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the stack (repeatable)")
    parser.add_argument("--keep-workdir", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    exit_cleanly_on_sigterm()
    args = parse_args(argv)
    interval = args.tick_interval
    report = Report("no_disruption", METHOD, {
        "steady": args.steady, "churn": args.churn, "clients": args.clients,
        "tick_interval_s": interval, "mode": args.mode,
    })
    profiles = Profiles(args.profile, args.profile_format)
    with ExitStack() as cleanup:
        scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        csv_path = scratch / "instruments.csv"
        tokens = write_instruments_csv(csv_path, max(6000, args.steady + args.churn + 10))
        steady, churned = tokens[: args.steady], tokens[args.steady : args.steady + args.churn]
        settings = {
            "TICKER_SIM_INSTRUMENTS_FILE": str(csv_path),
            "TICKER_SIM_TICK_INTERVAL_S": repr(interval),
            **env_overrides(args.env),
        }
        stack = cleanup.enter_context(running_stack(
            "nodisrupt", [ACCOUNT], keep_workdir=args.keep_workdir, **settings))
        watch = EventWatch(stack.redis_url, stack.events_channel)
        cleanup.callback(watch.close)
        placed = place_many(stack.web_port, watch, steady, args.mode)
        if placed.refused or placed.missing:
            raise RuntimeError(f"steady placement failed: {placed}")

        tap = TickTap(stack.redis_url, stack.ticks_channel, mode="tokens")
        cleanup.callback(tap.close)
        time.sleep(4 * interval + 1.0)
        began_wall, began = time.time(), time.monotonic()
        groups = stack_process_groups(stack)
        meter = CpuMeter(groups).start()
        profiles.record("worker-n", stack.worker_process(ACCOUNT.id).pid,
                        args.churn / 60 + 2)
        latencies = churn(stack.web_port, watch, churned, args.clients, args.mode)
        ended = time.monotonic()
        cpu = meter.stop()
        time.sleep(2 * interval)
        tap.recording = False
        profiles.wait()
        ops_per_s = 2 * len(churned) / (ended - began)
        report.figure("churn", {"subscribes": len(churned), "unsubscribes": len(churned),
                                "seconds": round(ended - began, 1),
                                "operations_per_s": round(ops_per_s, 1),
                                "subscribe_latency": latency_summary(latencies), "cpu": cpu},
                      f"{len(churned)} subscribes + {len(churned)} unsubscribes by "
                      f"{args.clients} clients in {ended - began:.1f} s ({ops_per_s:.0f} "
                      f"operations/s); subscribe latency {describe_latency(latency_summary(latencies))}"
                      f"; CPU % of a core: {cpu}")

        arrivals: dict[int, list[float]] = {}
        for token, arrived in zip(tap.tokens, tap.times):
            arrivals.setdefault(token, []).append(arrived)
        longest: dict[int, float] = {}
        for token in steady:
            times = arrivals.get(token, [])
            before = [t for t in times if t < began]
            during = [t for t in times if began <= t <= ended + interval]
            window = before[-1:] + during
            gaps = [b - a for a, b in pairwise(window)]
            longest[token] = max(gaps) if gaps else float("inf")
        worst_token = max(longest, key=longest.__getitem__)
        worst = longest[worst_token]
        missed = sum(1 for g in longest.values() if g >= 1.5 * interval)
        report.figure("steady_gaps", {
            "longest_gap_s": round(worst, 3), "token": worst_token,
            "longest_in_intervals": round(worst / interval, 2),
            "median_token_longest_gap_s": round(statistics.median(longest.values()), 3),
            "tokens_with_a_missed_tick": missed,
            "ticks_seen_during_churn": sum(
                1 for t in tap.times if began <= t <= ended),
        }, f"longest gap in any of {len(steady)} steady tokens' ticks: {worst:.3f} s "
           f"({worst / interval:.2f} intervals, token {worst_token}); median token's longest "
           f"{statistics.median(longest.values()):.3f} s; tokens that missed a tick: {missed}")

        connections = get_json(f"{stack.sim_rest}/_sim/connections?api_key={ACCOUNT.api_key}")
        frames = frames_naming(connections, set(steady), began_wall)
        report.figure("frames_for_steady", frames,
                      f"{frames['frames_since_start']} text frames received by the simulator "
                      f"since the churn began; naming a steady token: "
                      f"{frames['naming_steady']} (simulator's record complete: "
                      f"{frames['record_complete']})")
        if frames["examples"]:
            report.note("frames naming steady tokens: " + json.dumps(frames["examples"]))
        report.target("longest steady gap (intervals)", worst / interval, 2)
        report.target("frames resent for steady tokens", frames["naming_steady"], 0)
    report.finish()


if __name__ == "__main__":
    main()

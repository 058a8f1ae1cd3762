"""Subscribe latency: POST /subscriptions until `subscription_created` is on Redis.

    .venv/bin/python -m bench.subscribe_latency            # about 2.5 minutes
    .venv/bin/python -m bench.subscribe_latency --n 1000   # the full 1,000 per level

Measured on one `ticker run` stack with two simulated accounts and a generated
universe of 24,000 NFO options: sequential subscribes at 100, 3,000 and 9,000 live
subscriptions, 16 concurrent clients, and, side by side at 3,000 live, the gap one
incremental subscribe tears in the other tokens' ticks against a full reload done
with the official client.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
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
    place_many,
    remove_many,
    sleep_until_before_cycle,
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

ACCOUNTS = (BenchAccount("a"), BenchAccount("b"))
EVENT_TIMEOUT_S = 30.0
# Operations of the gap comparison start this long before a simulator tick cycle, so
# that the change is in flight when the cycle's frames are built (the worst phase).
RELOAD_LEAD_S = 0.001
SUBSCRIBE_LEAD_S = 0.004
WARM_UP_SUBSCRIBES = 6

METHOD = """
One `ticker run` stack (simulator, Redis, PostgreSQL, two account workers, web with
two gunicorn processes, backfill worker, beat, Flower) with its own ports, database
and Redis db; two simulated accounts of 3 connections x 3,000; a generated universe of
24,000 NFO options; the simulator ticks every --tick-interval seconds; every
subscription asks for --mode. Backfill requests are paced to one a day so candle
fetching does not load the machine (each subscribe still queues its backfill task).

Latency of one subscribe = from just before POST /subscriptions to the arrival of its
`subscription_created` event at a listener subscribed to the events channel before
the request (time.monotonic, same process). Sequential: one client, one subscribe at
a time; after each, the token is removed again (DELETE, wait for
`subscription_removed`, not timed), so the live count stays at the level measured.
Levels are reached by POSTing live subscriptions from 16 threads and waiting for
every event. The first few subscribes warm the web processes' instrument cache and
are not counted. Concurrent: 16 threads, each POSTs and waits for its event, then the
next; throughput = subscribes / (last event - first POST).

Gap, at 3,000 live: a raw-socket listener on the ticks channel records each tick's
token and arrival. Incremental path: single subscribes, a few seconds apart; for
every live token the longest time between two of its ticks across the whole window
is compared with the tick interval (a gap >= 1.5 intervals means a missed tick).
Full-reload baseline, in the same run: the official KiteTicker in a subprocess
streams the same 3,000 tokens on its own connection, then closes it, opens a new
one and subscribes all 3,000 again at once (no reconnect back-off: the best case);
measured there: time from close to every token ticking again, and each token's gap.
"""


class Tokens:
    """Hands out instrument tokens: the live set first, then fresh ones, never twice."""

    def __init__(self, all_tokens: Sequence[int], live_max: int) -> None:
        self.live = list(all_tokens[:live_max])
        self._fresh: Iterator[int] = iter(all_tokens[live_max:])

    def fresh(self, count: int) -> list[int]:
        taken = [token for _, token in zip(range(count), self._fresh)]
        if len(taken) < count:
            raise RuntimeError("the generated universe ran out of fresh tokens; raise --universe")
        return taken


def timed_subscribe(api: Api, watch: EventWatch, token: int, mode: str,
                    answered: list[float] | None = None) -> float:
    """Seconds from POST to `subscription_created`; the HTTP answer time goes to `answered`."""
    expected = watch.expect(CREATED, token)
    started = time.monotonic()
    status, body = api.subscribe(token, mode)
    if answered is not None:
        answered.append(time.monotonic() - started)
    if status != 202:
        raise RuntimeError(f"POST /subscriptions {token} answered {status}: {body}")
    if not expected.done.wait(EVENT_TIMEOUT_S):
        raise RuntimeError(f"no subscription_created for {token} in {EVENT_TIMEOUT_S:.0f} s")
    return expected.at - started


def remove(api: Api, watch: EventWatch, token: int) -> None:
    expected = watch.expect(REMOVED, token)
    status, body = api.unsubscribe(token)
    if status != 202:
        raise RuntimeError(f"DELETE /subscriptions/{token} answered {status}: {body}")
    if not expected.done.wait(EVENT_TIMEOUT_S):
        raise RuntimeError(f"no subscription_removed for {token} in {EVENT_TIMEOUT_S:.0f} s")


def sequential(api: Api, watch: EventWatch, tokens: Sequence[int], mode: str,
               answered: list[float] | None = None) -> list[float]:
    latencies = []
    for token in tokens:
        latencies.append(timed_subscribe(api, watch, token, mode, answered))
        remove(api, watch, token)
    return latencies


def concurrent(port: int, watch: EventWatch, tokens: Sequence[int], mode: str,
               clients: int, answered: list[float]) -> tuple[list[float], float]:
    """Latencies and subscribes per second with `clients` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    firsts: list[float] = []
    lasts: list[float] = []

    def client(share: Sequence[int]) -> None:
        api = Api(port)
        mine: list[float] = []
        http: list[float] = []
        firsts.append(time.monotonic())
        for token in share:
            mine.append(timed_subscribe(api, watch, token, mode, http))
        lasts.append(time.monotonic())
        with lock:
            latencies.extend(mine)
            answered.extend(http)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [tokens[i::clients] for i in range(clients)]))
    return latencies, len(tokens) / (max(lasts) - min(firsts))


def grow_to(stack_port: int, watch: EventWatch, tokens: Tokens, live_now: int, level: int,
            mode: str, report: Report, groups: dict[str, Any]) -> int:
    if level <= live_now:
        return live_now
    meter = CpuMeter(groups).start()
    placed = place_many(stack_port, watch, tokens.live[live_now:level], mode)
    cpu = meter.stop()
    if placed.refused or placed.missing:
        raise RuntimeError(f"placing {level - live_now}: refused={placed.refused} "
                           f"missing={len(placed.missing)}")
    rate = (level - live_now) / placed.seconds
    report.figure(f"placement_{live_now}_to_{level}",
                  {"seconds": round(placed.seconds, 2), "per_s": round(rate, 1), "cpu": cpu},
                  f"{level - live_now} live subscriptions placed by 16 clients in "
                  f"{placed.seconds:.1f} s ({rate:.0f}/s); CPU % of a core: {cpu}")
    return level


def incremental_gaps(stack: Any, watch: EventWatch, live: Sequence[int], new: Sequence[int],
                     mode: str, interval_s: float) -> dict[str, Any]:
    """Single subscribes while `live` stream: the longest gap in the live tokens' ticks."""
    tap = TickTap(stack.redis_url, stack.ticks_channel, mode="tokens")
    api = Api(stack.web_port)
    try:
        time.sleep(3 * interval_s)
        began = time.monotonic()
        latencies = []
        for token in new:
            sleep_until_before_cycle(interval_s, SUBSCRIBE_LEAD_S)
            latencies.append(timed_subscribe(api, watch, token, mode))
            time.sleep(2 * interval_s)
        ended = time.monotonic()
        time.sleep(interval_s)
    finally:
        tap.close()
    arrivals: dict[int, list[float]] = {}
    for token, arrived in zip(tap.tokens, tap.times):
        arrivals.setdefault(token, []).append(arrived)
    live_set = set(live)
    worst: list[float] = []
    for token in live_set:
        times = arrivals.get(token, [])
        # Every gap that overlaps [began, ended]: from the last tick before to the first after.
        window = [t for t in times if began - 2 * interval_s <= t <= ended + interval_s]
        gaps = [b - a for a, b in pairwise(window)]
        worst.append(max(gaps) if gaps else float("inf"))
    missed = [max(round(g / interval_s) - 1, 0) for g in worst if g != float("inf")]
    return {
        "subscribes": len(new),
        "created_latency": latency_summary(latencies),
        "live_tokens": len(live_set),
        "live_tokens_seen": sum(1 for g in worst if g != float("inf")),
        "gap_median_s": round(statistics.median(worst), 3),
        "gap_max_s": round(max(worst), 3),
        "tokens_missing_a_tick": sum(1 for m in missed if m > 0),
        "ticks_missed": sum(missed),
        "tap_disconnected": tap.disconnected,
    }


def reload_baseline(stack: Any, tokens: Sequence[int], mode: str, interval_s: float,
                    reloads: int) -> dict[str, Any]:
    account = ACCOUNTS[0]
    params = {
        "ws_root": stack.env["TICKER_KITE_WS_ROOT"],
        "api_key": account.api_key,
        "access_token": account.access_token,
        "tokens": list(tokens),
        "mode": mode.lower(),
        "tick_interval_s": interval_s,
        "reloads": reloads,
        "lead_s": RELOAD_LEAD_S,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench._reload_baseline"], input=json.dumps(params),
        capture_output=True, text=True, timeout=300, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reload baseline failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def batched(port: int, watch: EventWatch, tokens: Sequence[int], mode: str,
            batch_size: int) -> dict[str, Any]:
    """Instruments a second through POST /subscriptions/batch, one client.

    Timed from the first POST to the last `subscription_created`; each POST's own
    answer time is kept too (placement of the whole batch in one transaction).
    """
    for token in tokens:
        watch.expect(CREATED, token)
    api = Api(port)
    answered = []
    started = time.monotonic()
    for start in range(0, len(tokens), batch_size):
        posted = time.monotonic()
        status, body = api.subscribe_batch(tokens[start : start + batch_size], mode)
        if status not in (200, 202) or body["refused"]:
            raise RuntimeError(f"batch refused: {status} {str(body)[:300]}")
        answered.append(time.monotonic() - posted)
    missing = watch.wait_all(CREATED, tokens, EVENT_TIMEOUT_S)
    if missing:
        raise RuntimeError(f"{len(missing)} batch subscribes never announced")
    last = max(watch.wait(CREATED, token, 0) or 0.0 for token in tokens)
    elapsed = last - started
    return {"instruments": len(tokens), "batch_size": batch_size,
            "seconds": round(elapsed, 3), "per_s": round(len(tokens) / elapsed, 1),
            "post_answer_ms": [round(x * 1000, 1) for x in answered]}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.subscribe_latency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300,
                        help="sequential subscribes per level (the issue's full run: 1000)")
    parser.add_argument("--levels", default="100,3000,9000",
                        help="live subscriptions to measure at, comma-separated")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--concurrent-n", type=int, default=800,
                        help="subscribes in the concurrent run (at the first level)")
    parser.add_argument("--batch-n", type=int, default=3000,
                        help="instruments subscribed through POST /subscriptions/batch")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="instruments in each batch POST")
    parser.add_argument("--incremental", type=int, default=5,
                        help="single subscribes whose gap is measured at the gap level")
    parser.add_argument("--reloads", type=int, default=3, help="full reloads in the baseline")
    parser.add_argument("--gap-level", type=int, default=3000,
                        help="live subscriptions for the gap comparison")
    parser.add_argument("--mode", default="FULL", choices=["LTP", "QUOTE", "FULL"])
    parser.add_argument("--tick-interval", type=float, default=1.0,
                        help="simulator seconds between tick frames (Kite: about 1)")
    parser.add_argument("--universe", type=int, default=24_000,
                        help="instruments in the generated universe")
    parser.add_argument("--profile", type=Path,
                        help="write py-spy profiles of web and workers (concurrent run) here")
    parser.add_argument("--profile-format", default="speedscope",
                        choices=["speedscope", "raw", "flamegraph"])
    parser.add_argument("--env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the stack (repeatable)")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the stack's output (stack.log) after the run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    exit_cleanly_on_sigterm()
    args = parse_args(argv)
    levels = sorted(int(x) for x in args.levels.split(","))
    report = Report("subscribe_latency", METHOD, {
        "n_per_level": args.n, "levels": levels, "clients": args.clients,
        "concurrent_n": args.concurrent_n, "incremental": args.incremental,
        "reloads": args.reloads, "gap_level": args.gap_level, "mode": args.mode,
        "tick_interval_s": args.tick_interval, "universe": args.universe,
    })
    profiles = Profiles(args.profile, args.profile_format)
    with ExitStack() as cleanup:
        scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        csv_path = scratch / "instruments.csv"
        tokens = Tokens(write_instruments_csv(csv_path, args.universe),
                        max(levels + [args.gap_level]))
        settings = {
            "TICKER_SIM_INSTRUMENTS_FILE": str(csv_path),
            "TICKER_SIM_TICK_INTERVAL_S": repr(args.tick_interval),
            **env_overrides(args.env),
        }
        stack = cleanup.enter_context(running_stack(
            "subscribe", ACCOUNTS, keep_workdir=args.keep_workdir, **settings))
        watch = EventWatch(stack.redis_url, stack.events_channel)
        cleanup.callback(watch.close)
        api = Api(stack.web_port)

        # The first request of each gunicorn process loads Kite's instrument list.
        warm = sequential(api, watch, tokens.fresh(WARM_UP_SUBSCRIBES), args.mode)
        groups = stack_process_groups(stack)  # postgres backends exist by now
        report.figure("warm_up_ms", [round(x * 1000, 1) for x in warm],
                      "first subscribes (instrument list loading), not counted: "
                      + ", ".join(f"{x * 1000:.0f}" for x in warm) + " ms")

        live = 0
        concurrent_rate = batch_rate = float("nan")
        by_level: dict[int, dict[str, float]] = {}
        for level in levels:
            live = grow_to(stack.web_port, watch, tokens, live, level, args.mode, report, groups)
            answered: list[float] = []
            meter = CpuMeter(groups).start()
            summary = latency_summary(sequential(api, watch, tokens.fresh(args.n), args.mode,
                                                 answered))
            cpu = meter.stop()
            by_level[level] = summary
            http = latency_summary(answered)
            report.figure(f"sequential_at_{level}_live",
                          {**summary, "http_answer": http, "cpu": cpu},
                          f"POST -> created {describe_latency(summary)}; POST answered: "
                          f"median {http['median_ms']:.1f} ms, p99 {http['p99_ms']:.1f} ms; "
                          f"CPU % of a core: {cpu}")

            if level == levels[0]:
                burst = tokens.fresh(args.concurrent_n)
                answered = []
                for name, processes in groups.items():
                    if name == "web" or name.startswith("worker-"):
                        for process in processes:
                            profiles.record(f"{name}-{process.pid}", process.pid,
                                            args.concurrent_n / 200)
                meter = CpuMeter(groups).start()
                latencies, rate = concurrent(stack.web_port, watch, burst, args.mode,
                                             args.clients, answered)
                cpu = meter.stop()
                profiles.wait()
                summary = latency_summary(latencies)
                http = latency_summary(answered)
                report.figure(f"concurrent_{args.clients}_at_{level}_live",
                              {**summary, "per_s": round(rate, 1), "http_answer": http,
                               "cpu": cpu},
                              f"POST -> created {describe_latency(summary)}; POST answered: "
                              f"median {http['median_ms']:.1f} ms, p99 {http['p99_ms']:.1f} "
                              f"ms; {rate:.0f} subscribes/s; CPU % of a core: {cpu}")
                concurrent_rate = rate
                # Back to the level: the concurrent run's tokens are removed again.
                removed = remove_many(stack.web_port, watch, burst)
                if removed.missing:
                    raise RuntimeError(f"{len(removed.missing)} removals never announced")

                batch = tokens.fresh(args.batch_n)
                meter = CpuMeter(groups).start()
                batch_figures = batched(stack.web_port, watch, batch, args.mode,
                                        args.batch_size)
                cpu = meter.stop()
                batch_rate = batch_figures["per_s"]
                report.figure("batch", {**batch_figures, "cpu": cpu},
                              f"{args.batch_n} instruments in batches of {args.batch_size}:"
                              f" {batch_rate:.0f} instruments/s from first POST to last "
                              f"created; each POST answered in "
                              f"{statistics.median(batch_figures['post_answer_ms']):.0f} ms "
                              f"(median); CPU % of a core: {cpu}")
                removed = remove_many(stack.web_port, watch, batch)
                if removed.missing:
                    raise RuntimeError(f"{len(removed.missing)} removals never announced")

            if level == args.gap_level:
                gaps = incremental_gaps(stack, watch, tokens.live[:level],
                                        tokens.fresh(args.incremental), args.mode,
                                        args.tick_interval)
                report.figure(f"incremental_gap_at_{level}_live", gaps,
                              f"{gaps['subscribes']} single subscribes: longest gap in any "
                              f"of {gaps['live_tokens_seen']} live tokens' ticks "
                              f"{gaps['gap_max_s']:.2f} s (median token's longest "
                              f"{gaps['gap_median_s']:.2f} s; interval {args.tick_interval} s); "
                              f"ticks missed {gaps['ticks_missed']}")
                baseline = reload_baseline(stack, tokens.live[:level], args.mode,
                                           args.tick_interval, args.reloads)
                for i, one in enumerate(baseline["reloads"], 1):
                    report.figure(f"full_reload_{i}_at_{level}", one,
                                  f"reload {i}: closed in {one['closed_s'] * 1000:.0f} ms, "
                                  f"all {level} resubscribed after "
                                  f"{(one['resubscribed_s'] or 0) * 1000:.0f} ms, all ticking "
                                  f"again after {one['all_ticking_s']:.2f} s; longest gap "
                                  f"{one['gap_max_s']:.2f} s (median {one['gap_median_s']:.2f} s)"
                                  f"; {one['tokens_missing_a_tick']} tokens missed "
                                  f"{one['ticks_missed']} ticks")
                report.target(f"one subscribe at {level} live: ticks missed",
                              gaps["ticks_missed"], 0)

        first, last = levels[0], levels[-1]
        report.target(f"sequential median at {first} live", by_level[first]["median_ms"], 15,
                      unit=" ms")
        report.target(f"sequential p99 at {first} live", by_level[first]["p99_ms"], 60,
                      unit=" ms")
        report.target(f"median at {last} live / at {first} live",
                      by_level[last]["median_ms"] / by_level[first]["median_ms"], 1.5)
        report.target(f"p99 at {last} live / at {first} live",
                      by_level[last]["p99_ms"] / by_level[first]["p99_ms"], 1.5)
        report.target(f"subscribes/s with {args.clients} clients", concurrent_rate, 300,
                      at_most=False)
        report.target("batch instruments/s", batch_rate, 5000, at_most=False)
    report.finish()


if __name__ == "__main__":
    main()

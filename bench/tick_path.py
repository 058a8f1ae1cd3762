"""Tick path: full-mode ticks from the simulator's socket to the ticks channel on Redis.

    .venv/bin/python -m bench.tick_path                         # about 3 minutes
    .venv/bin/python -m bench.tick_path --rates 20000,40000,60000,80000,100000

One account holds 9,000 FULL subscriptions on its 3 connections. A simulator of the
benchmark's own (outside the stack, as Kite is) is restarted at each tick interval;
the account worker reconnects and resubscribes by itself. Per rate: ticks sent by
the simulator against tick messages received on Redis, exactly; then latency from
the frame leaving the simulator to its ticks on Redis at 20,000 ticks/s; and the
official client's parser against the project's on the same frames.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import redis

from bench._clients import EventWatch, TickTap, get_json, place_many, worker_state
from bench._instruments import write_instruments_csv
from bench._report import Report, describe_latency, latency_summary
from bench._stack import (
    BenchAccount,
    CpuMeter,
    Profiles,
    SimulatorProcess,
    env_overrides,
    exit_cleanly_on_sigterm,
    free_port,
    running_stack,
    stack_process_groups,
    write_accounts_file,
)

ACCOUNT = BenchAccount("t")
INSTRUMENTS = 9000
SEED_INTERVAL_S = 5.0
RESUBSCRIBED_TIMEOUT_S = 60.0
CONNECTED_TIMEOUT_S = 30.0

METHOD = """
One `ticker run` stack (web, one account worker, backfill worker, beat, Flower, its
own idle simulator) with its own ports, database and Redis db, and one simulated
account (3 connections x 3,000). The account's Kite is a `ticker sim` the benchmark
runs itself, outside the stack, so it can be restarted with another
TICKER_SIM_TICK_INTERVAL_S while the stack runs: each time, the worker's clients
reconnect and resubscribe the 9,000 FULL subscriptions on their own (placed first
through POST /subscriptions). Nominal rate = 9,000 / interval ticks a second.

Throughput and loss, per rate: after the worker's 3 connections carry all 9,000
again and 2 s of warm-up, the simulator's counters (GET /_sim/stats ticks_sent) and
a raw-socket listener's count of tick messages on the ticks channel are read
--seconds apart; CPU of each process over the same window. Loss is counted
exactly: the simulator is stopped (SIGTERM) and prints each connection's lifetime
ticks; the listener, subscribed before it started, waits until it has that many
(or until neither it nor the worker's ticks_published moved for 20 s); loss = sent
- received. The worker's own counters (Redis state key: frames_dropped, backlog,
publish_failures) are read as well. A rate is sustained when nothing was lost, the
simulator delivered at least 95% of nominal, the listener received at least 97% of
what was sent within the window, and the worker's backlog was at most 3 frames.

Latency at --latency-rate: a relay of the benchmark's own between worker and
simulator notes when each frame's last byte left the simulator; the listener
records every tick's token and the arrival of the chunk holding it;
latency = arrival on Redis - that frame's send time (time.monotonic across
processes: CLOCK_MONOTONIC). Also shown: frame send time - the cycle's scheduled
start, i.e. the simulator's own time to build and send a frame, not part of the
service's path.

Parsers: the same full-mode frames of 3,000 packets built by the simulator's own
encoder, decoded by KiteTicker._parse_binary and by ticker.ticks.parse_frame in
turns in this process; best of --parser-rounds rounds each.
"""


def wait_resubscribed(sim: SimulatorProcess, count: int, timeout_s: float) -> float:
    """Seconds until the simulator's connections carry `count` tokens in all."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            connections = get_json(f"{sim.rest}/_sim/connections")
        except OSError:
            connections = []
        if sum(len(c["subscriptions"]) for c in connections) >= count:
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"worker did not resubscribe {count} tokens in {timeout_s:.0f} s")


def drain(tap: TickTap, client: redis.Redis, state_key: str, sent: int,
          stall_s: float = 20.0) -> dict[str, Any]:
    """Wait until the listener got all `sent` ticks, or the flow stalled; worker state.

    Neither a quiet channel nor an empty backlog means the worker is done: frames
    taken from the queue into a batch count in neither while the batch is decoded,
    which can take seconds. So it waits for the exact total the simulator sent, and
    calls the rest lost only when neither the listener's count nor the worker's
    ticks_published moved for `stall_s`.
    """
    last = (-1, -1)
    moved_at = time.monotonic()
    while tap.count < sent:
        state = worker_state(client, state_key)
        now = (tap.count, state.get("ticks_published", -1))
        if now != last:
            last, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at > stall_s:
            break
        time.sleep(0.5)
    time.sleep(2.5)  # one more heartbeat, so the state below is current
    return worker_state(client, state_key)


class Step:
    """One rate: a simulator at one interval and the figures measured against it."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.nominal = INSTRUMENTS / interval_s
        self.result: dict[str, Any] = {"nominal_per_s": round(self.nominal)}


def measure_window(sim: SimulatorProcess, tap: TickTap, client: redis.Redis, state_key: str,
                   groups: dict[str, Any], seconds: float) -> dict[str, Any]:
    before_state = worker_state(client, state_key)
    meter = CpuMeter(groups).start()
    stats_a, tap_a, t_a = get_json(f"{sim.rest}/_sim/stats"), tap.count, time.monotonic()
    time.sleep(seconds)
    stats_b, tap_b, t_b = get_json(f"{sim.rest}/_sim/stats"), tap.count, time.monotonic()
    cpu = meter.stop()
    time.sleep(2.5)  # the worker writes its state every 2 s
    after_state = worker_state(client, state_key)
    elapsed = t_b - t_a
    return {
        "sent_per_s": round((stats_b["ticks_sent"] - stats_a["ticks_sent"]) / elapsed),
        "received_per_s": round((tap_b - tap_a) / elapsed),
        "frames_sent_per_s": round((stats_b["frames_sent"] - stats_a["frames_sent"]) / elapsed, 2),
        "worker_frames_dropped": after_state.get("frames_dropped", 0)
        - before_state.get("frames_dropped", 0),
        "worker_backlog_frames": after_state.get("backlog"),
        "worker_publish_failures": after_state.get("publish_failures", 0)
        - before_state.get("publish_failures", 0),
        "cpu": cpu,
    }


def frame_latencies(proxy_lines: list[str], sim_connections: list[dict[str, Any]],
                    tap: TickTap, interval_s: float) -> dict[str, Any]:
    """Latency of each recorded tick from its frame's send time, and the sim's own delay."""
    conn_of_token: dict[int, int] = {}
    for connection in sim_connections:
        for token in connection["subscriptions"]:
            conn_of_token[int(token)] = connection["id"]
    frames: dict[int, list[float]] = {}
    build: list[float] = []
    for line in proxy_lines:
        _, _, at, first, _count = line.split()
        sim_conn = conn_of_token.get(int(first))
        if sim_conn is None:
            continue
        arrived = float(at)
        frames.setdefault(sim_conn, []).append(arrived)
        build.append(arrived - int(arrived / interval_s) * interval_s)
    for times in frames.values():
        times.sort()
    latencies: list[float] = []
    by_frame: dict[tuple[int, int], list[float]] = {}
    unmatched = 0
    for token, arrived in zip(tap.tokens, tap.times):
        connection = conn_of_token.get(token, -1)
        times = frames.get(connection)
        if not times:
            unmatched += 1
            continue
        i = bisect_right(times, arrived) - 1
        if i < 0:
            unmatched += 1
            continue
        latency = arrived - times[i]
        latencies.append(latency)
        by_frame.setdefault((connection, i), []).append(latency)
    return {
        "latency": latency_summary(latencies),
        "first_tick_of_frame": latency_summary([min(x) for x in by_frame.values()]),
        "last_tick_of_frame": latency_summary([max(x) for x in by_frame.values()]),
        "unmatched": unmatched,
        "sim_send_after_cycle_start": latency_summary(build),
        "lagging_over_one_interval": sum(1 for x in latencies if x > interval_s),
    }


def compare_parsers(csv_path: Path, tokens: Sequence[int], rounds: int) -> dict[str, Any]:
    """Ticks a second for the official parser and the project's, on the same frames."""
    from kiteconnect import KiteTicker

    from ticker.simulator.market import Market
    from ticker.simulator.universe import load_universe
    from ticker.ticks import parse_frame

    market = Market(load_universe(csv_path))
    chosen = list(tokens[:3000])
    frames = [market.frame(dict.fromkeys(chosen, "full"), cycle) for cycle in range(1, 6)]
    packets = sum(len(parse_frame(f)) for f in frames)
    official = KiteTicker("bench", "bench")
    candidates = {
        "kiteconnect_parse_binary": official._parse_binary,
        "ticker_parse_frame": parse_frame,
    }
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, parse in candidates.items():
            started = time.perf_counter()
            for frame in frames:
                parse(frame)
            rate = packets / (time.perf_counter() - started)
            best[name] = max(best.get(name, 0.0), rate)
    same = [
        (a["instrument_token"], a["last_price"], a["depth"]["buy"][0]["price"])
        for a in official._parse_binary(frames[0])
    ] == [
        (b["instrument_token"], b["last_price"], b["depth"]["buy"][0]["price"])
        for b in parse_frame(frames[0])
    ]
    return {name: round(rate) for name, rate in best.items()} | {
        "frames": len(frames), "packets_per_frame": packets // len(frames),
        "same_tokens_prices_depth": same,
    }


class Proxy:
    """The timing relay, in a process of its own so it never waits for the benchmark."""

    def __init__(self, listen_port: int, upstream_port: int) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._wsproxy", str(listen_port), str(upstream_port)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "listening":
            raise RuntimeError("the timing relay did not start")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("frame "):
                self.lines.append(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tick_path",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20000,40000,60000",
                        help="nominal ticks/s to try, comma-separated, rising")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring window per rate")
    parser.add_argument("--latency-rate", type=float, default=20000)
    parser.add_argument("--latency-seconds", type=float, default=6.0)
    parser.add_argument("--parser-rounds", type=int, default=5)
    parser.add_argument("--profile", type=Path,
                        help="write py-spy profiles of the worker at each rate here")
    parser.add_argument("--profile-format", default="speedscope",
                        choices=["speedscope", "raw", "flamegraph"])
    parser.add_argument("--env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the stack (repeatable)")
    parser.add_argument("--keep-workdir", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    exit_cleanly_on_sigterm()
    args = parse_args(argv)
    rates = [float(x) for x in args.rates.split(",")]
    report = Report("tick_path", METHOD, {
        "instruments": INSTRUMENTS, "connections": 3, "rates": rates,
        "seconds": args.seconds, "latency_rate": args.latency_rate,
        "latency_seconds": args.latency_seconds, "parser_rounds": args.parser_rounds,
    })
    profiles = Profiles(args.profile, args.profile_format)
    with ExitStack() as cleanup:
        scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        csv_path = scratch / "instruments.csv"
        tokens = write_instruments_csv(csv_path)

        parsers = compare_parsers(csv_path, tokens, args.parser_rounds)
        ratio = parsers["ticker_parse_frame"] / parsers["kiteconnect_parse_binary"]
        report.figure("parsers", parsers,
                      f"same frames ({parsers['frames']} x {parsers['packets_per_frame']} full "
                      f"packets): KiteTicker._parse_binary "
                      f"{parsers['kiteconnect_parse_binary']:,} ticks/s, ticker.ticks."
                      f"parse_frame {parsers['ticker_parse_frame']:,} ticks/s ({ratio:.2f}x); "
                      f"same tokens, prices and depth: {parsers['same_tokens_prices_depth']}")

        ws_port, rest_port, hidden_port = free_port(), free_port(), free_port()
        sim_log = scratch / "simulator.log"
        # The stack's /health wants the worker's sockets open, so this simulator runs
        # first, with the same account and instruments the stack is given.
        sim_env = dict(os.environ,
                       TICKER_ACCOUNTS_FILE=str(write_accounts_file(scratch / "accounts.yaml",
                                                                    [ACCOUNT])),
                       TICKER_SIM_INSTRUMENTS_FILE=str(csv_path))
        sims: list[SimulatorProcess] = []

        def start_sim(interval_s: float, port: int) -> SimulatorProcess:
            started = SimulatorProcess(sim_env, port, rest_port, interval_s, sim_log)
            sims.append(started)
            started.wait_listening()
            return started

        def stop_sims() -> None:
            for started in sims:
                if started.process.poll() is None:
                    started.stop()

        cleanup.callback(stop_sims)
        sim = start_sim(SEED_INTERVAL_S, ws_port)
        settings = {
            "TICKER_SIM_INSTRUMENTS_FILE": str(csv_path),
            "TICKER_KITE_WS_ROOT": f"ws://127.0.0.1:{ws_port}",
            "TICKER_KITE_REST_ROOT": f"http://127.0.0.1:{rest_port}",
            **env_overrides(args.env),
        }
        stack = cleanup.enter_context(running_stack(
            "tickpath", [ACCOUNT], keep_workdir=args.keep_workdir, **settings))
        watch = EventWatch(stack.redis_url, stack.events_channel)
        cleanup.callback(watch.close)
        placed = place_many(stack.web_port, watch, tokens[:INSTRUMENTS], "FULL")
        if placed.refused or placed.missing:
            raise RuntimeError(f"placing {INSTRUMENTS}: refused={len(placed.refused)} "
                               f"missing={len(placed.missing)}")
        report.figure("placed", round(placed.seconds, 1),
                      f"{INSTRUMENTS} FULL subscriptions placed through the API in "
                      f"{placed.seconds:.1f} s ({INSTRUMENTS / placed.seconds:.0f}/s), "
                      f"simulator ticking every {SEED_INTERVAL_S:.0f} s meanwhile")
        client = redis.Redis.from_url(stack.redis_url)
        state_key = stack.state_key(ACCOUNT.id)
        groups = stack_process_groups(stack)
        sim.stop()

        time.sleep(3.0)  # let Flower and PostgreSQL finish with the placement
        # Latency: the simulator moves behind the timing relay on the worker's port.
        sim = start_sim(INSTRUMENTS / args.latency_rate, hidden_port)
        proxy = Proxy(ws_port, hidden_port)
        wait_resubscribed(sim, INSTRUMENTS, RESUBSCRIBED_TIMEOUT_S)
        time.sleep(2.0)
        tap = TickTap(stack.redis_url, stack.ticks_channel, mode="tokens")
        proxy.lines.clear()
        meter = CpuMeter({**groups, "simulator(bench)": [psutil.Process(sim.process.pid)]}).start()
        time.sleep(args.latency_seconds)
        tap.recording = False
        cpu = meter.stop()
        lines = list(proxy.lines)
        connections = get_json(f"{sim.rest}/_sim/connections")
        tap.close()
        sim.stop()
        proxy.stop()
        latency = frame_latencies(lines, connections, tap, sim.tick_interval_s)
        latency["cpu"] = cpu
        report.figure(f"latency_at_{round(args.latency_rate)}", latency,
                      f"frame sent -> tick on Redis: {describe_latency(latency['latency'])}; "
                      f"first tick of each frame: "
                      f"{describe_latency(latency['first_tick_of_frame'])}; last tick: "
                      f"{describe_latency(latency['last_tick_of_frame'])}; "
                      f"ticks past one interval {latency['lagging_over_one_interval']}; the "
                      f"simulator's own send delay after the cycle start: "
                      f"{describe_latency(latency['sim_send_after_cycle_start'])}; "
                      f"CPU % of a core: {cpu}")

        sustained = 0.0
        for rate in rates:
            step = Step(INSTRUMENTS / rate)
            # Listening before the simulator starts makes the lifetime count exact.
            tap = TickTap(stack.redis_url, stack.ticks_channel, mode="count")
            sim = start_sim(step.interval_s, ws_port)
            step.result["resubscribed_after_s"] = round(
                wait_resubscribed(sim, INSTRUMENTS, RESUBSCRIBED_TIMEOUT_S), 2)
            time.sleep(2.0)
            sim_groups = {**groups, "simulator(bench)": [psutil.Process(sim.process.pid)]}
            profiles.record(f"worker-at-{round(step.nominal)}",
                            stack.worker_process(ACCOUNT.id).pid, args.seconds)
            step.result.update(measure_window(sim, tap, client, state_key, sim_groups,
                                              args.seconds))
            profiles.wait()
            totals = sim.stop()
            sent = sum(ticks for _, ticks in totals.values())
            final = drain(tap, client, state_key, sent)
            received = tap.count
            tap.close()
            step.result.update(sent_total=sent, received_total=received,
                               lost=sent - received, tap_disconnected=tap.disconnected,
                               worker_totals={k: final.get(k) for k in (
                                   "frames_received", "frames_dropped", "ticks_published",
                                   "publish_failures")})
            # Loss is counted after draining, so keeping up is judged separately: the
            # listener got what was sent, in the window, and no backlog was left.
            ok = (step.result["lost"] == 0 and not tap.disconnected
                  and step.result["sent_per_s"] >= 0.95 * step.nominal
                  and step.result["received_per_s"] >= 0.97 * step.result["sent_per_s"]
                  and (step.result["worker_backlog_frames"] or 0) <= 3)
            step.result["kept_up"] = ok
            if ok:
                sustained = max(sustained, step.result["received_per_s"])
            r = step.result
            report.figure(f"rate_{round(step.nominal)}", r,
                          f"nominal {step.nominal:,.0f}/s (interval {step.interval_s:.3f} s): "
                          f"sent {r['sent_per_s']:,}/s, received {r['received_per_s']:,}/s; "
                          f"lifetime sent {sent:,} received {received:,} lost {r['lost']:,}; "
                          f"worker dropped {r['worker_frames_dropped']} frames, backlog "
                          f"{r['worker_backlog_frames']}; CPU % of a core: {r['cpu']}")

        report.figure("sustained_no_loss_per_s", sustained,
                      f"highest rate delivered with no loss: {sustained:,.0f} ticks/s")
        report.target("tick path full ticks/s with no loss", sustained, 60_000, at_most=False)
        report.target(f"tick latency p99 at {round(args.latency_rate)}/s",
                      latency["latency"].get("p99_ms", float("nan")), 10, unit=" ms")
    report.finish()


if __name__ == "__main__":
    main()

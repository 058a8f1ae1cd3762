"""Footprint and start-up: memory of a worker holding 9,000 and of the web; restart time.

    .venv/bin/python -m bench.footprint                  # about 2 minutes
    .venv/bin/python -m bench.footprint --restarts 3

One account holds 9,000 FULL subscriptions. Measured: resident memory (RSS, children
included) of its worker before and after, and of the web processes; then the worker
is stopped with SIGTERM, `ticker run` starts it again, and the time until every one
of the 9,000 tokens ticks on Redis again is taken from the new process's start.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench._clients import Api, EventWatch, TickTap, place_many
from bench._instruments import write_instruments_csv
from bench._report import Report
from bench._stack import (
    BenchAccount,
    Stack,
    env_overrides,
    exit_cleanly_on_sigterm,
    running_stack,
)

ACCOUNT = BenchAccount("f")
INSTRUMENTS = 9000
MIB = 1024 * 1024
RESTART_TIMEOUT_S = 120.0

METHOD = """
One `ticker run` stack with its own ports, database and Redis db, one simulated
account (3 connections x 3,000), a generated universe of 24,000 NFO options, the
simulator ticking every --tick-interval s. Memory: psutil RSS (and USS, the pages no
other process shares) of the account's Celery worker process plus its children
(--pool threads has none), and of gunicorn's master and each of its workers, read
after the stack is up and a few subscribes have loaded the instrument list, then
again after 9,000 FULL subscriptions were placed through POST /subscriptions and
have ticked for a few seconds.

Start-up: a raw-socket listener on the ticks channel records each tick's token and
arrival; the worker's process gets SIGTERM (a warm Celery shutdown that closes its
sockets and gives up its lease); `ticker run` notices the exit and starts it again.
From the new process's start time (psutil create_time) to the first moment every one
of the 9,000 tokens has ticked on Redis again; the stack's log lines of the new
worker split that time into its steps.
"""


def memory(processes: Sequence[psutil.Process]) -> dict[str, float]:
    rss = uss = 0
    for process in processes:
        info = process.memory_full_info()
        rss += info.rss
        uss += info.uss
    return {"rss_mib": round(rss / MIB, 1), "uss_mib": round(uss / MIB, 1),
            "rss_mb": round(rss / 1e6, 1)}


def with_children(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


def web_memory(stack: Stack) -> dict[str, Any]:
    master = stack.web_master()
    workers = master.children()
    return {
        "master": memory([master]),
        "workers": [memory([w]) for w in workers],
        "total": memory([master, *workers]),
    }


_STEP_LINE = re.compile(r"^worker-\S+\s+\| \[(\S+ \S+): \w+/MainProcess\] (.*)$")
_STEPS = (
    ("database migrated", "migrations checked"),
    ("lease taken", "lease taken"),
    ("socket open", "first socket open"),
    ("account worker started", "account worker started"),
    ("ready.", "celery ready"),
)


def start_up_steps(stack: Stack, since_wall: float) -> dict[str, float]:
    """Seconds after `since_wall` at which the new worker logged each start-up step."""
    found: dict[str, float] = {}
    for line in stack.lines_matching(re.compile(r"^worker-")):
        match = _STEP_LINE.match(line)
        if not match:
            continue
        at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at < since_wall:
            continue
        for needle, label in _STEPS:
            if needle in match[2] and label not in found:
                found[label] = round(at - since_wall, 3)
    return found


def restart(stack: Stack, tap: TickTap, tokens: set[int]) -> dict[str, Any]:
    old = stack.worker_process(ACCOUNT.id)
    offset = time.time() - time.monotonic()
    tap.clear()
    tap.recording = True
    signalled = time.monotonic()
    old.terminate()
    old.wait(60)
    exited = time.monotonic()
    deadline = signalled + RESTART_TIMEOUT_S
    new = None
    while new is None and time.monotonic() < deadline:
        try:
            candidate = stack.worker_process(ACCOUNT.id)
            if candidate.pid != old.pid:
                new = candidate
        except LookupError:
            time.sleep(0.05)
    if new is None:
        raise RuntimeError("ticker run did not start the worker again")
    started = new.create_time() - offset  # on the monotonic clock
    seen: dict[int, float] = {}
    consumed = 0
    while len(seen) < len(tokens) and time.monotonic() < deadline:
        time.sleep(0.1)
        count = len(tap.tokens)
        for token, arrived in zip(tap.tokens[consumed:count], tap.times[consumed:count]):
            if arrived > started and token in tokens:
                seen.setdefault(token, arrived)
        consumed = count
    if len(seen) < len(tokens):
        raise RuntimeError(f"only {len(seen)} of {len(tokens)} tokens ticked after restart")
    all_back = max(seen.values())
    last_old = max((t for t in tap.times if t < started), default=signalled)
    tap.recording = False
    return {
        "sigterm_to_exit_s": round(exited - signalled, 3),
        "exit_to_new_process_s": round(started - exited, 3),
        "start_to_first_tick_s": round(min(seen.values()) - started, 3),
        "start_to_all_streaming_s": round(all_back - started, 3),
        "sigterm_to_all_streaming_s": round(all_back - signalled, 3),
        "ticks_stopped_for_s": round(all_back - last_old, 3),
        "steps_after_start_s": start_up_steps(stack, started + offset),
        "new_pid": new.pid,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--tick-interval", type=float, default=1.0)
    parser.add_argument("--env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the stack (repeatable)")
    parser.add_argument("--keep-workdir", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    exit_cleanly_on_sigterm()
    args = parse_args(argv)
    report = Report("footprint", METHOD, {
        "instruments": INSTRUMENTS, "restarts": args.restarts,
        "tick_interval_s": args.tick_interval,
    })
    with ExitStack() as cleanup:
        scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        csv_path = scratch / "instruments.csv"
        tokens = write_instruments_csv(csv_path)
        live, spare = tokens[:INSTRUMENTS], tokens[INSTRUMENTS:]
        settings = {
            "TICKER_SIM_INSTRUMENTS_FILE": str(csv_path),
            "TICKER_SIM_TICK_INTERVAL_S": repr(args.tick_interval),
            **env_overrides(args.env),
        }
        stack = cleanup.enter_context(running_stack(
            "footprint", [ACCOUNT], keep_workdir=args.keep_workdir, **settings))
        watch = EventWatch(stack.redis_url, stack.events_channel)
        cleanup.callback(watch.close)
        # A few subscribes, removed again, load the instrument list in both web processes.
        api = Api(stack.web_port)
        for token in spare[:8]:
            api.subscribe(token)
        for token in spare[:8]:
            api.unsubscribe(token)
        time.sleep(3)
        worker = stack.worker_process(ACCOUNT.id)
        idle = memory(with_children(worker))
        web_idle = web_memory(stack)
        report.figure("worker_idle", idle,
                      f"account worker with no subscriptions: RSS {idle['rss_mib']} MiB "
                      f"(USS {idle['uss_mib']} MiB)")

        placed = place_many(stack.web_port, watch, live, "FULL")
        if placed.refused or placed.missing:
            raise RuntimeError(f"placing {INSTRUMENTS}: {len(placed.refused)} refused, "
                               f"{len(placed.missing)} missing")
        time.sleep(5 * args.tick_interval + 2)
        loaded = memory(with_children(worker))
        per_sub = (loaded["rss_mib"] - idle["rss_mib"]) * MIB / INSTRUMENTS
        report.figure("worker_9000", loaded,
                      f"account worker holding {INSTRUMENTS} FULL subscriptions, streaming: "
                      f"RSS {loaded['rss_mib']} MiB (USS {loaded['uss_mib']} MiB); "
                      f"{per_sub / 1024:.1f} KiB more per subscription than idle")
        web_loaded = web_memory(stack)
        report.figure("web", {"after_warm_up": web_idle, "after_9000": web_loaded},
                      f"web: gunicorn master RSS {web_loaded['master']['rss_mib']} MiB, "
                      f"workers RSS {[w['rss_mib'] for w in web_loaded['workers']]} MiB "
                      f"(after warm-up {[w['rss_mib'] for w in web_idle['workers']]}); "
                      f"all {web_loaded['total']['rss_mib']} MiB RSS, "
                      f"{web_loaded['total']['uss_mib']} MiB USS")

        tap = TickTap(stack.redis_url, stack.ticks_channel, mode="tokens")
        cleanup.callback(tap.close)
        tap.recording = False
        time.sleep(2 * args.tick_interval)
        starts = []
        for i in range(1, args.restarts + 1):
            result = restart(stack, tap, set(live))
            starts.append(result["start_to_all_streaming_s"])
            report.figure(f"restart_{i}", result,
                          f"SIGTERM -> exit {result['sigterm_to_exit_s']:.2f} s, runner "
                          f"restarts it after {result['exit_to_new_process_s']:.2f} s; new "
                          f"process start -> first tick {result['start_to_first_tick_s']:.2f} "
                          f"s -> all {INSTRUMENTS} streaming "
                          f"{result['start_to_all_streaming_s']:.2f} s (SIGTERM -> all "
                          f"{result['sigterm_to_all_streaming_s']:.2f} s); steps after "
                          f"start: {result['steps_after_start_s']}")
            time.sleep(3 * args.tick_interval)
        restarted = memory(with_children(stack.worker_process(ACCOUNT.id)))
        report.figure("worker_9000_after_restart", restarted,
                      f"restarted worker holding {INSTRUMENTS}: RSS {restarted['rss_mib']} "
                      f"MiB (USS {restarted['uss_mib']} MiB)")
        report.target(f"worker RSS at {INSTRUMENTS} (MB, 10^6 bytes)",
                      max(loaded["rss_mb"], restarted["rss_mb"]), 200)
        report.target(f"worker start to {INSTRUMENTS} streaming (worst of {len(starts)})",
                      max(starts), 5, unit=" s")
    report.finish()


if __name__ == "__main__":
    main()

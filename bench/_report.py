"""How every benchmark reports: its method, its figures, the machine, one JSON line.

Figures are printed as they are measured, so a long run shows progress; the last
line of the output is always one JSON object with everything, for tools.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

import psutil


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Count, median, p90, p99 and max, in milliseconds."""
    if not seconds:
        return {"n": 0}
    return {
        "n": len(seconds),
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "p90_ms": round(percentile(seconds, 90) * 1000, 2),
        "p99_ms": round(percentile(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def describe_latency(summary: dict[str, float]) -> str:
    if not summary.get("n"):
        return "no samples"
    return (f"n={summary['n']} median {summary['median_ms']:.1f} ms, "
            f"p90 {summary['p90_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
            f"max {summary['max_ms']:.1f} ms")


class Report:
    """One benchmark run's printed report and its closing JSON line."""

    def __init__(self, name: str, method: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = params
        self.results: dict[str, Any] = {}
        self.targets: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self._started = time.monotonic()
        self._load_start = os.getloadavg()
        psutil.cpu_percent(None)  # starts the machine-wide CPU meter
        self._say(f"== {name}")
        self._say(f"machine: {os.cpu_count()} cores, load average "
                  f"{self._load_text(self._load_start)}, Python {platform.python_version()}")
        self._say("METHOD")
        for paragraph in method.strip().split("\n\n"):
            self._say(textwrap.fill(" ".join(paragraph.split()), 88,
                                    initial_indent="  ", subsequent_indent="  "))
        self._say("parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()))
        self._say("FIGURES")

    def figure(self, key: str, value: Any, text: str | None = None) -> None:
        """Record one result under `key` and print it (or `text` describing it)."""
        self.results[key] = value
        self._say(f"  {key}: {text if text is not None else value}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        self._say(f"  note: {text}")

    def target(self, label: str, measured: float, limit: float, *, at_most: bool = True,
               unit: str = "") -> bool:
        """Compare a figure with its target; printed as met or missed, never hidden."""
        met = (measured <= limit) if at_most else (measured >= limit)
        if math.isnan(measured):
            met = False
        ratio = measured / limit if limit else math.nan
        self.targets.append({"target": label, "measured": measured, "limit": limit,
                             "at_most": at_most, "met": met, "ratio": round(ratio, 3)})
        sign = "<=" if at_most else ">="
        how_far = f" ({ratio:.2f}x of the limit)" if limit else ""
        self._say(f"  target {label}: {measured:.4g}{unit} vs {sign} {limit:g}{unit} -> "
                  f"{'met' if met else 'MISSED'}{how_far}")
        return met

    def finish(self) -> None:
        load_end = os.getloadavg()
        cpu_busy = psutil.cpu_percent(None)
        elapsed = time.monotonic() - self._started
        self._say(f"machine at the end: load average {self._load_text(load_end)}, "
                  f"all cores {cpu_busy:.0f}% busy on average over the run; "
                  f"run took {elapsed:.0f} s")
        record = {
            "benchmark": self.name,
            "cores": os.cpu_count(),
            "load_average_start": [round(x, 2) for x in self._load_start],
            "load_average_end": [round(x, 2) for x in load_end],
            "cpu_busy_percent": cpu_busy,
            "seconds": round(elapsed, 1),
            "params": self.params,
            "results": self.results,
            "targets": self.targets,
            "notes": self.notes,
        }
        sys.stdout.write(json.dumps(record, default=str) + "\n")
        sys.stdout.flush()

    @staticmethod
    def _load_text(load: tuple[float, float, float]) -> str:
        return " / ".join(f"{x:.2f}" for x in load) + " (1/5/15 min)"

    @staticmethod
    def _say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

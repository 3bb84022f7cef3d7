"""Helpers every benchmark shares: the machine it ran on and best-of timing (imported
by the scripts in this folder, which run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import numpy as np


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(*extra: str) -> str:
    """CPU, cores, Python and numpy versions, the load average now (other work on the
    machine slows every figure), and any ``extra`` versions worth naming."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    parts = [
        f"{cpu_model()}, {os.cpu_count()} cores",
        f"Python {platform.python_version()}",
        f"numpy {np.__version__}",
        *extra,
    ]
    return ", ".join(parts) + f"; load average at start {load}"


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timings of ``fn()``, in seconds (the run least
    disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best time of each run over ``rounds`` interleaved rounds (a burst of load
    elsewhere hits every run alike)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for key, fn in runs.items():
            best[key] = min(best[key], best_of(fn, 1))
    return best

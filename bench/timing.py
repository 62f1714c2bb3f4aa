"""Timing for the benchmarks: every side warmed up once, then the median of several timed runs."""

from __future__ import annotations

import statistics
import time


def median_seconds(work, repeats: int) -> float:
    """One warm-up call (tracing, JIT, caches, first reads), then the median wall time of `repeats` calls."""
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)

"""Choices between two exact ways of computing a layer, made by timing both once per process on
this CPU: which one wins differs by CPU class (AMX, AVX-512 without it, AVX2) and by shape
(benchmarks/RESULTS.md), so no fixed rule serves every machine."""
from __future__ import annotations

import time

LONG_MS = 20.0  # a call this long is timed once after its warm-up
# The second way is taken only when clearly faster: the first is the one with fewer cases.
MARGIN = 0.95


def median_ms(run, repeats: int = 3) -> float:
    """Median milliseconds of ``run()`` after one warm-up call (oneDNN builds its kernel then)."""
    start = time.perf_counter()
    run()
    if (time.perf_counter() - start) * 1e3 > LONG_MS:
        repeats = 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


def second_faster(first, second) -> bool:
    """Whether ``second()`` is clearly faster than ``first()`` here (timed first, then second)."""
    a = median_ms(first)
    return median_ms(second) < MARGIN * a

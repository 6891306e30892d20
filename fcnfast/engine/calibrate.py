"""Choices between two exact ways of computing a layer, made by timing both once per process on
this CPU: which one wins differs by CPU class (AMX, AVX-512 without it, AVX2) and by shape
(benchmarks/RESULTS.md), so no fixed rule serves every machine."""
from __future__ import annotations

import time

LONG_MS = 20.0  # calls this long are timed in fewer rounds
ROUNDS, LONG_ROUNDS = 7, 3
# The second way is taken only when clearly faster: the first is the one with fewer cases.
MARGIN = 0.95


def _ms(run) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def paired_ms(first, second) -> "tuple[float, float]":
    """Median milliseconds of ``first()`` and of ``second()``, each warmed up once (oneDNN builds
    its kernels then), then timed in alternating rounds (first–second, second–first, …): a CPU
    whose clock or caches drift over the measurement, as a small VM's do, slows both alike."""
    warm = max(_ms(first), _ms(second))
    rounds = LONG_ROUNDS if warm > LONG_MS else ROUNDS
    a, b = [], []
    for i in range(rounds):
        if i % 2:
            b.append(_ms(second))
            a.append(_ms(first))
        else:
            a.append(_ms(first))
            b.append(_ms(second))
    return sorted(a)[rounds // 2], sorted(b)[rounds // 2]


def second_faster(first, second) -> bool:
    """Whether ``second()`` is clearly faster than ``first()`` here."""
    a, b = paired_ms(first, second)
    return b < MARGIN * a

"""Helpers shared by the benchmark scripts: timing, and the machine/version facts every JSON row
carries (device name, torch/triton versions, git revision, date, load).

Imported by ``bench_ops.py`` and ``throughput.py`` as a sibling module (each puts this directory
on ``sys.path``), so the scripts run from anywhere without installing anything.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch

from fcnfast.bench import cpu_model  # noqa: F401  (one definition, shared with `fcnfast bench`)


# --- timing ------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call: the median of ``samples`` (after warm-up), and how they were taken."""
    median_s: float
    samples: List[float] = field(default_factory=list)
    timer: str = "perf_counter"

    @property
    def ms(self) -> float:
        return self.median_s * 1e3

    @property
    def repeats(self) -> int:
        return len(self.samples)


def measure(fn: Callable[[], object], device: torch.device, *, warmup: int = 1,
            min_repeats: int = 3, budget_s: float = 0.0, max_repeats: int = 200,
            cuda_events: bool = True) -> Timing:
    """Time ``fn``: ``warmup`` calls, then at least ``min_repeats`` timed calls, more while the
    timed calls have taken less than ``budget_s`` in all (at most ``max_repeats``).

    On a CUDA device each call is bracketed by CUDA events on the current stream (``cuda_events``;
    pass False for work queued on other streams or by other runtimes, e.g. onnxruntime: then
    perf_counter between two ``torch.cuda.synchronize``). On the CPU: perf_counter.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    events = device.type == "cuda" and cuda_events
    samples: List[float] = []
    start = time.perf_counter()
    while len(samples) < min_repeats or (time.perf_counter() - start < budget_s
                                         and len(samples) < max_repeats):
        if events:
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            fn()
            t1.record()
            t1.synchronize()
            samples.append(t0.elapsed_time(t1) / 1e3)
        else:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            samples.append(time.perf_counter() - t0)
    return Timing(statistics.median(samples), samples, "cuda events" if events else "perf_counter")


# --- machine and versions ----------------------------------------------------------------------

def git_revision() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    if not rev:  # a copy of the tree without .git (e.g. shipped to a GPU machine)
        return os.environ.get("FCNFAST_GIT_REV", "unknown")
    return rev + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine() or 'cpu'}, torch threads: {torch.get_num_threads()}"




def triton_version() -> str:
    try:
        import triton

        return triton.__version__
    except Exception:
        return "not installed"


def load_average() -> Optional[List[float]]:
    """1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"error: {type(e).__name__}: {msg}"[:160]

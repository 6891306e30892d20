"""Helpers shared by the benchmark scripts: timing, and the machine/version facts every JSON row
carries (device name, torch/triton versions, git revision, date, load).

Imported by ``bench_ops.py`` and ``throughput.py`` as a sibling module (each puts this directory
on ``sys.path``), so the scripts run from anywhere without installing anything.
"""
from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from fcnfast.bench import cpu_model  # noqa: F401  (one definition, shared with `fcnfast bench`)


# --- timing ------------------------------------------------------------------------------------

# glibc hands a large freed block back to the kernel, and the next allocation of that size faults
# its pages in afresh: whichever column runs after one that freed hundreds of MB (eager fp32) pays
# for it, while columns with their own arenas (onnxruntime, OpenVINO) do not (benchmarks/RESULTS.md,
# 2026-12-06). The benchmark scripts run with glibc keeping freed memory, every column alike.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(64 << 30),
                     "MALLOC_TOP_PAD_": str(1 << 30)}
MALLOC_OPT_OUT = "FCNFAST_BENCH_MALLOC"  # =default: measure with glibc's own settings


# --as-avx2: this CPU runs as an AVX2-only one for every library in the process — oneDNN (torch's
# and OpenVINO's), onnxruntime's MLAS, ATen, inductor, fcnfast's dispatch — through cpuid_avx2.c
# (CPUID with AVX-512, AMX and native bf16 hidden, LD_PRELOADed). Caches, clock and ports stay this
# CPU's, so it measures the kernels every runtime picks there, not that CPU's speed.
AS_AVX2 = "--as-avx2"
_CPUID_SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpuid_avx2.c")


def cpuid_avx2_library() -> str:
    """The shared library of cpuid_avx2.c, built (once per source text) with ``$CC`` or cc."""
    with open(_CPUID_SHIM, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out = os.path.join(tempfile.gettempdir(), f"fcnfast-cpuid_avx2-{digest}.so")
    if os.path.exists(out):
        return out
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"{AS_AVX2}: needs Linux on x86-64 (CPUID faulting)")
    with open("/proc/cpuinfo") as f:
        if "cpuid_fault" not in f.read().split():
            raise SystemExit(f"{AS_AVX2}: this CPU or VM has no CPUID faulting (no cpu flag cpuid_fault)")
    cc = os.environ.get("CC", "cc")
    tmp = f"{out}.{os.getpid()}"
    try:
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tmp, _CPUID_SHIM, "-ldl"], check=True,
                       capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or e
        raise SystemExit(f"{AS_AVX2}: building {_CPUID_SHIM} with {cc} failed: {detail}")
    os.replace(tmp, out)
    return out


def keep_freed_memory() -> None:
    """Re-run this script (``sys.argv``) with ``KEEP_FREED_MEMORY`` in its environment, unless it
    has it already or ``FCNFAST_BENCH_MALLOC=default`` asks for glibc's defaults; with
    cpuid_avx2.c preloaded as well when the script was given ``--as-avx2``."""
    env = {}
    if platform.system() == "Linux" and os.environ.get(MALLOC_OPT_OUT) != "default":
        env.update(KEEP_FREED_MEMORY)
    if AS_AVX2 in sys.argv[1:]:
        shim = cpuid_avx2_library()
        preload = os.environ.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = preload if shim in preload.split(":") else ":".join(filter(None, [shim, preload]))
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


def emulated_cpu_class() -> Optional[str]:
    """"AVX2-only" when this process runs with cpuid_avx2.c preloaded (checked: torch and fcnfast
    must see an AVX2 CPU without native bf16); None otherwise."""
    if "cpuid_avx2" not in os.environ.get("LD_PRELOAD", ""):
        if AS_AVX2 in sys.argv[1:]:
            raise RuntimeError(f"{AS_AVX2}: cpuid_avx2 is not preloaded (the re-run failed?)")
        return None
    import fcnfast._C as native
    from fcnfast.engine import cpu_bf16_native

    seen = (torch.backends.cpu.get_cpu_capability(), native.cpu_capability(), cpu_bf16_native())
    if seen != ("AVX2", "avx2", False):
        raise RuntimeError(f"{AS_AVX2}: torch, fcnfast and oneDNN see {seen}, not an AVX2-only CPU")
    return "AVX2-only (emulated: CPUID without AVX-512, AMX or native bf16, benchmarks/cpuid_avx2.c)"


def _keeping() -> bool:
    return all(os.environ.get(k) == v for k, v in KEEP_FREED_MEMORY.items())


def malloc_setting() -> str:
    """What the JSON rows and headers say of the allocator settings this process runs with."""
    if _keeping():
        return "glibc keeps freed memory (" + " ".join(f"{k}={v}" for k, v in KEEP_FREED_MEMORY.items()) + ")"
    return "glibc defaults"


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
        samples.append(_one_sample(fn, device, cuda_events))
    return Timing(statistics.median(samples), samples, "cuda events" if events else "perf_counter")


def measure_interleaved(fns: Dict[str, Tuple[Callable[[], object], bool]], device: torch.device, *,
                        warmup: int = 1, min_repeats: int = 3, budget_s: float = 0.0,
                        max_repeats: int = 200) -> Tuple[Dict[str, Timing], Dict[str, BaseException]]:
    """Time several calls side by side: ``fns`` maps a name to (fn, cuda_events) as ``measure``
    takes them. Each round calls every fn once, the order rotating round by round, so a machine
    whose speed drifts over minutes slows every column alike. Rounds go on until every fn has
    ``min_repeats`` samples and, beyond that, while the rounds have taken less than ``budget_s``
    per fn (at most ``max_repeats`` rounds). A fn that raises is dropped from the later rounds;
    its exception is returned instead of a timing."""
    errors: Dict[str, BaseException] = {}
    live = list(fns)

    def call(name: str, timed: bool, samples: List[float]) -> None:
        fn, cuda_events = fns[name]
        try:
            if timed:
                samples.append(_one_sample(fn, device, cuda_events))
            else:
                fn()
                sync(device)
        except Exception as e:  # noqa: BLE001 - reported per column, the others go on
            errors[name] = e
            live.remove(name)

    for name in list(live):
        for _ in range(warmup):
            if name in live:
                call(name, False, [])
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    start, rounds = time.perf_counter(), 0
    while live and (rounds < min_repeats or (time.perf_counter() - start < budget_s * len(fns)
                                             and rounds < max_repeats)):
        k = rounds % len(live)
        for name in live[k:] + live[:k]:
            if name in live:
                call(name, True, samples[name])
        rounds += 1
    events = device.type == "cuda"
    timings = {name: Timing(statistics.median(s), s, "cuda events" if events and fns[name][1]
                            else "perf_counter")
               for name, s in samples.items() if s and name not in errors}
    return timings, errors


def _one_sample(fn: Callable[[], object], device: torch.device, cuda_events: bool) -> float:
    if device.type == "cuda" and cuda_events:
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        fn()
        t1.record()
        t1.synchronize()
        return t0.elapsed_time(t1) / 1e3
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


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

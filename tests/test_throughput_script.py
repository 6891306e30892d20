"""benchmarks/throughput.py --quick: the README's first command and CI's smoke run (seconds, CPU)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "throughput.py")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("throughput") / "rows.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return proc, out


def test_quick_runs_and_passes(quick):
    proc, out = quick
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAIL" not in proc.stdout
    assert out.exists()


def test_quick_rows(quick):
    proc, out = quick
    data = json.loads(out.read_text())
    meta, rows = data["meta"], data["rows"]
    assert meta["quick"] is True and meta["device_type"] == "cpu"
    # the script re-ran itself with glibc keeping freed memory (where glibc is the allocator)
    assert meta["malloc"].startswith("glibc keeps freed memory") or not sys.platform.startswith("linux")
    assert meta["columns"] == ["a", "b", "e"]
    assert [(r["model"], r["height"], r["width"], r["batch"]) for r in rows] == [
        ("fcn8s", 64, 80, 1), ("fcn8s", 64, 80, 2)]
    for r in rows:
        for key in ("device", "torch", "triton", "git", "date", "loadavg_before", "loadavg_after"):
            assert key in r, key
        assert r["firm_fraction"] > 0.2  # random score layers: labels vary, margins are real
        assert sum(c > 0 for c in r["label_histogram"]) >= 2
        assert set(r["columns"]) == {"a", "b", "e"}
        for name, c in r["columns"].items():
            assert c["status"] == "ok", (name, c["status"])
            assert c["fps"] > 0 and c["e2e_ms"] > 0 and c["model_ms"] > 0
            assert c["e2e_repeats"] >= 2 and c["model_repeats"] >= 2
            assert c["fps_vs_a"] == pytest.approx(c["fps"] / r["columns"]["a"]["fps"])
            assert c["fps_vs_c"] is None  # no column c in --quick
        a, e = r["columns"]["a"], r["columns"]["e"]
        assert a["firm_agreement"] == 1.0 and a["agreement"] == 1.0  # a against itself
        assert e["firm_agreement"] >= 0.999
        assert e["op_backends"] and e["dtype"] in ("float32", "bfloat16")


def test_failures_flags_disagreement():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import throughput
    finally:
        sys.path.pop(0)
    row = {"model": "fcn8s", "height": 8, "width": 8, "batch": 1,
           "columns": {"a": {"status": "ok", "firm_agreement": 1.0},
                       "e": {"status": "ok", "firm_agreement": 0.99}}}
    assert len(throughput.failures([row])) == 1
    row["columns"]["e"]["firm_agreement"] = 0.9995
    assert throughput.failures([row]) == []
    row["columns"]["e"] = {"status": "error: RuntimeError: boom"}
    assert "boom" in throughput.failures([row])[0]


def test_interleaved_timing_rotates_and_drops_a_failing_column():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import timing
    finally:
        sys.path.pop(0)
    import torch

    calls = []

    def make(name, fail_at=None):
        def fn():
            calls.append(name)
            if fail_at is not None and calls.count(name) == fail_at:
                raise RuntimeError(f"{name} broke")
        return fn

    fns = {"a": (make("a"), True), "b": (make("b"), True), "c": (make("c", fail_at=3), True)}
    timings, errors = timing.measure_interleaved(fns, torch.device("cpu"), warmup=1, min_repeats=4)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, one each
    assert calls[3:6] == ["a", "b", "c"] and calls[6:8] == ["b", "c"]  # round 2 starts at b; c fails
    assert set(timings) == {"a", "b"} and "broke" in str(errors["c"])
    assert timings["a"].repeats == timings["b"].repeats == 4
    assert timings["a"].median_s >= 0


def test_the_allocator_setting_can_be_left_at_glibcs_defaults(tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "FCNFAST_BENCH_MALLOC": "default"}
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(out.read_text())["meta"]["malloc"] == "glibc defaults"


def _cpuid_faulting() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "cpuid_fault" in f.read().split()
    except OSError:
        return False


@pytest.mark.skipif(not _cpuid_faulting(), reason="needs Linux CPUID faulting (cpu flag cpuid_fault)")
def test_as_avx2_shows_every_library_an_avx2_only_cpu(tmp_path):
    """--as-avx2: CPUID without AVX-512/AMX/bf16 for the whole process (benchmarks/cpuid_avx2.c);
    the run checks torch and fcnfast see it, and every column then picks float32 by itself."""
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--as-avx2", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["meta"]["cpu_class_emulated"].startswith("AVX2-only")
    assert data["meta"]["float32_only"] is False  # float32 by detection, not by the flag
    for r in data["rows"]:
        assert r["columns"]["e"]["dtype"] == "float32" and r["columns"]["e"]["status"] == "ok"
    probe = ("import torch, fcnfast._C as m; from fcnfast.engine import cpu_bf16_native; "
             "print(torch.backends.cpu.get_cpu_capability(), m.cpu_capability(), cpu_bf16_native())")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import timing
    finally:
        sys.path.pop(0)
    env = {**os.environ, "LD_PRELOAD": timing.cpuid_avx2_library()}
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          timeout=120)
    assert seen.stdout.split() == ["AVX2", "avx2", "False"], seen.stderr[-2000:]
    # A program's own SIGSEGV handler (gcc's, which inductor runs; here Python's faulthandler)
    # is chained behind the shim's: it still reports a real fault, and CPUID still traps.
    crash = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                            "import torch, ctypes; print(torch.backends.cpu.get_cpu_capability(), "
                            "flush=True); ctypes.string_at(0)"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert crash.returncode != 0 and crash.stdout.split() == ["AVX2"]
    assert "Fatal Python error: Segmentation fault" in crash.stderr

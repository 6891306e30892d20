"""The native modules were built by setup.py and import here (CI has nvcc but no GPU)."""
import shutil

import pytest

from fcnfast import _ext

OPS = ("upsample_crop_add", "upsample_crop_argmax", "interp_argmax", "preprocess", "overlay")


def test_cpu_module_built_with_every_op():
    assert _ext.has_cpp_ops(), _ext._native_import("_C")[1]
    mod = _ext.native_module("cpp")
    missing = [op for op in OPS if not hasattr(mod, op)]
    assert not missing, f"fcnfast._C lacks {missing}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH: the CUDA module is not built")
def test_cuda_module_built_and_imports_without_a_gpu():
    assert _ext.has_cuda_ops(), _ext._native_import("_cuda")[1]
    mod = _ext.native_module("cuda")
    missing = [op for op in OPS if not hasattr(mod, op)]
    assert not missing, f"fcnfast._cuda lacks {missing}"


def test_cuda_backend_says_why_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    ok, why = _ext.cuda_status("cuda")
    assert not ok and ("CUDA is not available" in why or "not built" in why)


# --- CPU instruction-set levels (csrc/cpu/capability.h) --------------------------------------------

import ast  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROBE = os.path.join(HERE, "native", "capability_ops.py")
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _cpu_module():
    if not _ext.has_cpp_ops():
        pytest.skip(f"fcnfast._C is not built: {_ext._native_import('_C')[1]}")
    return _ext.native_module("cpp")


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if k != "FCNFAST_CPU_CAPABILITY"}
    env.update(overrides)
    return env


def test_cpu_module_reports_a_capability_it_lists():
    mod = _cpu_module()
    levels, built = mod.cpu_capabilities(), mod.cpu_build_flags()
    assert mod.cpu_capability() in levels, (mod.cpu_capability(), levels)
    assert levels[0] == "default" and set(levels) <= set(built), (levels, sorted(built))
    assert _ext.native_cpu_capability() == mod.cpu_capability()
    if X86:
        assert {"avx2", "avx512"} & set(built) or any(n.startswith("march=") for n in built), built
        if "FCNFAST_CPU_CAPABILITY" not in os.environ:  # nothing forced: the best level here
            assert mod.cpu_capability() == levels[-1]
    features = set(mod.cpu_features())
    for name, flags in built.items():  # a level runs here iff the CPU has each feature it asks for
        wants = {f[2:] for f in flags.split() if f.startswith("-m") and "=" not in f}
        if X86 and not name.startswith("march="):
            assert (name in levels) == (wants <= features), (name, wants - features)


def test_cpu_features_agree_with_the_kernel():
    mod = _cpu_module()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags")
    # Linux's names for the features the module checks (the OS's AVX state is in both).
    linux = {"sse3": "pni", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "bmi": "bmi1", "lzcnt": "abm",
             "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg",
             "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bf16": "avx512_bf16",
             "avx512fp16": "avx512_fp16", "avx512vbmi2": "avx512_vbmi2", "avxvnni": "avx_vnni"}
    for name in ("ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi",
                 "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"):
        assert (name in mod.cpu_features()) == (linux.get(name, name) in flags), name


def test_cpu_build_is_portable_by_default():
    """The module's levels: -ffp-contract=off and no fast-math on every one, no -march=native
    unless FCNFAST_CPU_MARCH asked for a level of its own."""
    built = _cpu_module().cpu_build_flags()
    for name, flags in built.items():
        assert "-ffp-contract=off" in flags and "fast-math" not in flags, (name, flags)
        if not name.startswith("march="):
            assert "-march=native" not in flags, (name, flags)
    if X86:
        assert "-march=x86-64 " in built["default"] + " ", built["default"]


def _setup_py_functions():
    """setup.py's top-level imports, constants and functions, without running setup()."""
    pytest.importorskip("setuptools")
    path = os.path.join(ROOT, "setup.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    tree.body = [n for n in tree.body
                 if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Assign))]
    ns = {"__file__": path}
    exec(compile(tree, path, "exec"), ns)
    return ns


def test_setup_py_builds_portable_levels_unless_asked(monkeypatch):
    ns = _setup_py_functions()
    monkeypatch.delenv("FCNFAST_CPU_MARCH", raising=False)
    levels, why = ns["cpu_levels"]()
    flags = [f for _, _, fl in levels for f in fl] + ns["cpu_flags"]()
    assert not any(f.startswith("-march=native") for f in flags), flags
    assert why
    names = [name for name, _, _ in levels]
    assert names == (["default", "avx2", "avx512"] if ns["IS_X86_64"] else ["default"])
    monkeypatch.setenv("FCNFAST_CPU_MARCH", "native")
    levels, _ = ns["cpu_levels"]()
    assert [(n, fl) for n, _, fl in levels][1:] == [("march=native", ["-march=native"])]
    assert levels[0][0] == "default" and "-march=native" not in levels[0][2]


def _outputs(levels, tmp_path) -> dict:
    """level → the probe's outputs in a process of its own under FCNFAST_CPU_CAPABILITY=level."""
    import torch

    runs = {lv: subprocess.Popen([sys.executable, PROBE, str(tmp_path / f"{lv}.pt")],
                                 env=_env(FCNFAST_CPU_CAPABILITY=lv), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for lv in levels}
    got = {}
    for lv, run in runs.items():
        log, _ = run.communicate(timeout=300)
        assert run.returncode == 0, log
        saved = torch.load(tmp_path / f"{lv}.pt")
        assert saved["level"] == lv, saved["level"]
        got[lv] = saved["outputs"]
    return got


def _same_bits(a, b) -> bool:
    """Bit for bit, except that any NaN equals any NaN (IEEE leaves their payloads open)."""
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.dtype.is_floating_point:
        return torch.equal(a, b)
    nan = torch.isnan(a)
    if not torch.equal(nan, torch.isnan(b)):
        return False
    ints = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
    return torch.equal(a[~nan].view(ints[a.dtype]), b[~nan].view(ints[a.dtype]))


def test_every_cpu_level_gives_the_same_bits(tmp_path):
    """Each op under FCNFAST_CPU_CAPABILITY=default (and =avx2 where the CPU has it) against this
    process's level (the best, unless the environment forced one)."""
    mod = _cpu_module()
    spec = importlib.util.spec_from_file_location("capability_ops", PROBE)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    here = probe.run_all()
    others = [lv for lv in mod.cpu_capabilities() if lv != mod.cpu_capability()][:2]
    if not others:
        pytest.skip(f"only one CPU level runs here ({mod.cpu_capability()})")
    for level, got in _outputs(others, tmp_path).items():
        assert sorted(got) == sorted(here)
        for name, ref in here.items():
            ref = ref if isinstance(ref, tuple) else (ref,)
            out = got[name] if isinstance(got[name], tuple) else (got[name],)
            bad = [i for i, (r, o) in enumerate(zip(ref, out)) if not _same_bits(r, o)]
            assert not bad, (f"{name}: output {bad} differs between levels {level} and "
                             f"{mod.cpu_capability()}")


def test_asking_for_an_unknown_level_warns_and_takes_the_best():
    mod = _cpu_module()
    code = ("import warnings\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import fcnfast._C as m\n"
            "print(m.cpu_capability())\n"
            "print(*[str(x.message) for x in w if issubclass(x.category, RuntimeWarning)], sep='|')\n")
    run = subprocess.run([sys.executable, "-c", code], env=_env(FCNFAST_CPU_CAPABILITY="sse9"),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    chosen, warned = run.stdout.splitlines()[:2]
    assert chosen == mod.cpu_capabilities()[-1]
    assert "FCNFAST_CPU_CAPABILITY=sse9" in warned and "unknown level" in warned, warned


def test_baseline_code_uses_no_wider_instructions():
    """What runs before (and outside) a level's kernels must run on any x86-64 CPU: every function
    of the module that baseline code can reach — the bindings, the dispatcher, and the inline
    functions the linker kept once (the C++ library's templates: setup.py links the baseline
    objects first, then the levels lowest first, so such a copy is that of the lowest object that
    has it) — uses no VEX/EVEX instruction, and none calls into a level's namespace directly.
    Reachable: from every function outside the levels' namespaces (fcn::cpu_avx2, ...) that nothing
    calls directly (entry points, callbacks), along direct calls and jumps."""
    mod = _cpu_module()
    objdump = shutil.which("objdump")
    if objdump is None or not X86:
        pytest.skip("needs objdump on x86-64")
    spec = importlib.util.find_spec("fcnfast._C")
    dis = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", spec.origin],
                         capture_output=True, text=True, timeout=120)
    assert dis.returncode == 0, dis.stderr
    # Functions by address (GCC's local clones of one function share a name across objects).
    head = re.compile(r"^([0-9a-f]+) <(.*)>:$")
    target = re.compile(r"^(?:call|jmp)\w*\s+([0-9a-f]+) <([^>]*)>")
    wide_reg = re.compile(r"%[yz]mm\d|%k[0-7]\b|\{%k")
    level_ns = [f"fcn::{ns}::" for ns in ("cpu_avx2", "cpu_avx512", "cpu_march", "cpu_amx", "cpu_bf16")]
    name, wide, calls, fn = {}, {}, {}, None
    for line in dis.stdout.splitlines():
        m = head.match(line)
        if m:
            fn = int(m.group(1), 16)
            name[fn], wide[fn], calls[fn] = m.group(2), False, set()
            continue
        if fn is None or "\t" not in line:
            continue
        insn = line.split("\t", 1)[1].strip()
        t = target.match(insn)
        if t and "+0x" not in t.group(2) and not t.group(2).endswith("@plt"):
            calls[fn].add(int(t.group(1), 16))
        if insn.startswith("v") or wide_reg.search(re.sub(r"<.*>", "", insn)):
            wide[fn] = True
    in_level = {f: any(ns in n for ns in level_ns) for f, n in name.items()}
    assert any(in_level.values()) or set(mod.cpu_build_flags()) == {"default"}
    called = {c for cs in calls.values() for c in cs}
    todo = [f for f in name if not in_level[f] and f not in called]
    reach = set(todo)
    while todo:
        for c in calls[todo.pop()]:
            if c in name and c not in reach:
                reach.add(c)
                todo.append(c)
    bad = sorted(name[f] for f in reach if wide[f] or in_level[f])
    assert not bad, bad[:10]

"""The CUDA kernels' fp16/bf16 arithmetic, run on the CPU: csrc/fcn_math.h's bit arithmetic (the
device path; the host uses F16C hardware where it has it) against the compiler's IEEE _Float16."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")


def _build_and_run(tmp_path, name: str, flags=()):
    """Compile tests/native/half_conversions.cpp with ``flags`` and run it: no mismatches."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("no g++")
    exe = tmp_path / name
    build = subprocess.run([cxx, "-O2", "-std=c++17", *flags, "-I", CSRC,
                            os.path.join(HERE, "native", "half_conversions.cpp"), "-o", str(exe)],
                           capture_output=True, text=True)
    if build.returncode != 0 and "_Float16" in build.stderr:
        pytest.skip("this compiler has no _Float16 to compare with")
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "mismatches 0" in run.stdout


def test_device_half_conversions_are_ieee(tmp_path):
    _build_and_run(tmp_path, "half_conversions")


def test_device_half_conversions_equal_f16c_hardware(tmp_path):
    """The same bit arithmetic against the F16C instructions (the compiler's _Float16 casts with
    -mf16c): the CPU levels built with F16C (avx2, avx512: fcn_math.h's FCN_HOST_F16 path) convert
    in hardware, the default level and the device by bit arithmetic, and all must agree."""
    try:
        with open("/proc/cpuinfo") as f:
            has_f16c = " f16c" in f.read()
    except OSError:
        has_f16c = False
    if not has_f16c:
        pytest.skip("this CPU has no F16C")
    _build_and_run(tmp_path, "half_conversions_f16c", ["-mf16c"])

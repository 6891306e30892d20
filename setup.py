"""Build script: the Python package (``kernels/`` installed as ``fcnfast.kernels``) and the native
head kernels.

- ``fcnfast._C``: the C++ CPU kernels (csrc/cpu, OpenMP), always built.
- ``fcnfast._cuda``: the CUDA kernels (csrc/cuda), built when nvcc is found (CUDA_HOME, then PATH);
  a missing nvcc is a warning, not a failure. ``FCNFAST_SKIP_CUDA_BUILD=1`` skips it.
Both bind with pybind11 on raw pointers (no libtorch), so they build beside a CPU-only torch.

Environment: ``FCNFAST_CUDA_ARCHS`` (default "80;90": sm_80 and sm_90 code plus sm_90 PTX),
``FCNFAST_CPU_MARCH`` (default "native" on x86-64; "" for none), ``MAX_JOBS`` (parallel nvcc).
"""
import glob
import os
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def say(msg):
    print(f"fcnfast setup: {msg}", file=sys.stderr)


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc"), home
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        home = os.path.dirname(os.path.dirname(real))
        if not os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            home = "/usr/local/cuda"  # a wrapper script on PATH
        return nvcc, home
    return None, None


def pybind11_include():
    try:
        import pybind11
    except ImportError:
        sys.exit("fcnfast setup: pybind11 is required to build the native kernels "
                 "(pip install pybind11, or build with build isolation)")
    return pybind11.get_include()


def cpu_flags():
    # No fused multiply-add contraction: host and device round every step alike, as the reference.
    flags = ["-O3", "-std=c++17", "-fopenmp", "-fvisibility=hidden", "-ffp-contract=off"]
    march = os.environ.get("FCNFAST_CPU_MARCH", "native" if platform.machine() in ("x86_64", "AMD64") else "")
    if march:
        flags.append(f"-march={march}")
    return flags


def cuda_gencode():
    archs = [a.strip() for a in os.environ.get("FCNFAST_CUDA_ARCHS", "80;90").replace(",", ";").split(";") if a.strip()]
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]  # PTX for newer GPUs
    return archs, flags


class BuildExt(build_ext):
    """build_ext that compiles .cu sources with nvcc (in parallel) before the normal link."""

    def build_extension(self, ext):
        cu = [s for s in ext.sources if s.endswith(".cu")]
        if cu:
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            ext.extra_objects = list(ext.extra_objects or []) + self._nvcc(cu, ext)
        super().build_extension(ext)

    def _nvcc(self, sources, ext):
        nvcc = ext.nvcc
        _, gencode = cuda_gencode()
        out_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(out_dir, exist_ok=True)
        common = [nvcc, "-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "--fmad=false",
                  "-I", os.path.join(HERE, "csrc"), *gencode]

        def one(src):
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            cmd = common + ["-c", src, "-o", obj]
            say(" ".join(cmd))
            subprocess.check_call(cmd)
            return obj

        jobs = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            return list(pool.map(one, sources))


def extensions():
    include = [os.path.join(HERE, "csrc"), pybind11_include()]
    exts = [Extension(
        "fcnfast._C",
        sources=sorted(glob.glob("csrc/cpu/*.cpp")),
        include_dirs=include,
        extra_compile_args=cpu_flags(),
        extra_link_args=["-fopenmp"],
        language="c++",
    )]
    say(f"building fcnfast._C (C++ CPU kernels, {' '.join(cpu_flags())})")
    if os.environ.get("FCNFAST_SKIP_CUDA_BUILD") == "1":
        say("FCNFAST_SKIP_CUDA_BUILD=1: not building fcnfast._cuda")
        return exts
    nvcc, home = find_nvcc()
    if nvcc is None:
        say("WARNING: nvcc not found (CUDA_HOME or PATH): not building fcnfast._cuda; "
            "backend='cuda' will be unavailable")
        return exts
    archs, _ = cuda_gencode()
    say(f"building fcnfast._cuda with {nvcc} (CUDA at {home}; sm_{', sm_'.join(archs)} + PTX)")
    lib = os.path.join(home, "lib64")
    cuda_ext = Extension(
        "fcnfast._cuda",
        sources=sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp")),
        include_dirs=include + [os.path.join(home, "include")],
        library_dirs=[lib],
        runtime_library_dirs=[lib],
        libraries=["cudart"],
        extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden"],
        language="c++",
    )
    cuda_ext.nvcc = nvcc
    exts.append(cuda_ext)
    return exts


setup(
    packages=["fcnfast", "fcnfast.models", "fcnfast.ops", "fcnfast.kernels", "fcnfast.engine",
              "fcnfast.data", "fcnfast.training", "fcnfast.video", "fcnfast.weights"],
    # The shipped default model (fcnfast.load("default")): a data-only package.
    package_data={"fcnfast.weights": ["*.safetensors"]},
    # Triton kernels live in the top-level kernels/ folder but install inside the package, so no
    # top-level `kernels` module lands in site-packages.
    package_dir={"fcnfast": "fcnfast", "fcnfast.kernels": "kernels"},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
)

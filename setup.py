"""Build script: the Python package (``kernels/`` installed as ``fcnfast.kernels``) and the native
head kernels.

- ``fcnfast._C``: the C++ CPU kernels (csrc/cpu, OpenMP), always built, and portable: the module is
  built for the x86-64 baseline, and its kernels once per instruction-set level — ``default``
  (baseline), ``avx2`` (x86-64-v3) and ``avx512`` (x86-64-v4) on x86-64, ``default`` alone
  elsewhere — in one library; at import it runs the highest level the CPU supports
  (``FCNFAST_CPU_CAPABILITY`` forces a lower one; csrc/cpu/capability.h). Every level is compiled
  with -ffp-contract=off and without fast-math, so all give bitwise-identical results.
- ``fcnfast._cuda``: the CUDA kernels (csrc/cuda), built when nvcc is found (CUDA_HOME, then PATH);
  a missing nvcc is a warning, not a failure. ``FCNFAST_SKIP_CUDA_BUILD=1`` skips it.
Both bind with pybind11 on raw pointers (no libtorch), so they build beside a CPU-only torch.

Environment: ``FCNFAST_CUDA_ARCHS`` (default "80;90": sm_80 and sm_90 code plus sm_90 PTX),
``FCNFAST_CPU_MARCH`` (unset by default: the portable levels above; set, e.g. "native", to build
the baseline and one level "march=<value>" compiled with -march=<value>, for that CPU only — the
module refuses that level on a CPU without its features), ``MAX_JOBS`` (parallel compiler jobs).
"""
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.modified import newer_group
except ImportError:  # setuptools < 69
    from distutils.dep_util import newer_group

HERE = os.path.dirname(os.path.abspath(__file__))
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# fcnfast._C: the bindings and the level dispatcher, built once for the baseline; every other
# csrc/cpu/*.cpp is a kernel source, built once per level.
CPU_BASE_SOURCES = ["csrc/cpu/module.cpp", "csrc/cpu/capability.cpp"]
# Built once, for CPUs with AMX (csrc/cpu/amx_matmul.h), and called only where the CPU has it.
CPU_AMX_SOURCES = ["csrc/cpu/amx_matmul.cpp"]
# Built once, for CPUs with AVX-512 BF16 (csrc/cpu/winograd_bf16.h), and called only where the CPU has it.
CPU_BF16_SOURCES = ["csrc/cpu/winograd_bf16.cpp"]


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


def jobs():
    return max(1, int(os.environ.get("MAX_JOBS", os.cpu_count() or 1)))


def cpu_common_flags():
    """Flags of every CPU object. No fused multiply-add contraction and no fast-math: host and device
    round every step alike, as the reference does, and every level gives the same bits."""
    return ["-O3", "-std=c++17", "-fopenmp", "-fvisibility=hidden", "-ffp-contract=off"]


def cpu_baseline_flags():
    """The target's baseline, spelled out: a compiler whose default is newer (some distributions
    default to x86-64-v2 or -v3) must not raise it for everyone."""
    return ["-march=x86-64", "-mtune=generic"] if IS_X86_64 else []


# Beyond the baseline, what each x86-64 level adds (csrc/cpu/capability.h): x86-64-v3 and -v4.
AVX2_FLAGS = ["-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mpopcnt"]
AVX512_FLAGS = AVX2_FLAGS + ["-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl"]
BF16_FLAGS = AVX512_FLAGS + ["-mavx512bf16"]
AMX_FLAGS = BF16_FLAGS + ["-mamx-tile", "-mamx-bf16"]


def cpu_levels():
    """The CPU kernel levels to build, lowest first, as (name, C++ namespace, flags beyond
    cpu_common_flags()), and why. FCNFAST_CPU_MARCH (opt-in) replaces the portable x86 levels
    above the baseline by one for that CPU."""
    base = cpu_baseline_flags()
    levels = [("default", "cpu_default", base)]
    march = os.environ.get("FCNFAST_CPU_MARCH", "").strip()
    if march:
        levels.append((f"march={march}", "cpu_march", [f"-march={march}"]))
        why = (f"FCNFAST_CPU_MARCH={march}: the baseline plus one level for that CPU only "
               "(unset it for a build that runs everywhere at full speed)")
    elif IS_X86_64:
        levels += [("avx2", "cpu_avx2", base + AVX2_FLAGS), ("avx512", "cpu_avx512", base + AVX512_FLAGS)]
        why = "x86-64: the portable baseline and the AVX2 and AVX-512 levels, chosen at import"
    else:
        why = f"{platform.machine()}: the baseline only (no run-time levels off x86-64)"
    return levels, why


def cpu_flags():
    """Flags of the module's baseline objects (the bindings and the dispatcher)."""
    return cpu_common_flags() + cpu_baseline_flags()


def cuda_gencode():
    archs = [a.strip() for a in os.environ.get("FCNFAST_CUDA_ARCHS", "80;90").replace(",", ";").split(";") if a.strip()]
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]  # PTX for newer GPUs
    return archs, flags


class BuildExt(build_ext):
    """build_ext that compiles fcnfast._C once per CPU level and the .cu sources with nvcc, each
    in parallel (MAX_JOBS), and builds the two modules side by side."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None and jobs() > 1:
            self.parallel = jobs()

    def build_extension(self, ext):
        ext_path = self.get_ext_fullpath(ext.name)
        if not (self.force or newer_group(list(ext.sources) + list(ext.depends), ext_path, "newer")):
            say(f"{ext.name} is up to date")
            return
        sources = ext.sources
        if ext.name == "fcnfast._C":
            ext.extra_objects = self._cpu_objects(ext)
            ext.sources = []  # all compiled above
        else:
            cu = [s for s in ext.sources if s.endswith(".cu")]
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            ext.extra_objects = self._nvcc(cu, ext) if cu else []
        force, self.force = self.force, True  # link: the objects are new even if the sources are not
        try:
            super().build_extension(ext)
        finally:
            ext.sources, self.force = sources, force

    def _accepts(self, flags):
        """Whether the C++ compiler accepts these flags (a compiler too old for AVX-512, say)."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.cpp")
            with open(src, "w") as f:
                f.write("int main() { return 0; }\n")
            try:
                self.compiler.compile([src], output_dir=tmp, extra_postargs=flags)
                return True
            except Exception:  # CompileError
                return False

    def _cpu_objects(self, ext):
        """The module's objects, in link order: the baseline ones (bindings, dispatcher), then each
        level's kernels, lowest level first. Where several objects hold the same inline function
        outside the levels' namespaces (the C++ library's templates), the linker keeps the first
        copy: a baseline one, or that of the lowest level that uses it, safe for every caller."""
        levels, _ = cpu_levels()
        kept = []
        for name, ns, flags in levels:
            if name != "default" and not self._accepts(flags):
                say(f"WARNING: the C++ compiler does not accept {' '.join(flags)}: "
                    f"not building CPU level {name}")
                continue
            kept.append((name, ns, flags))
        say("fcnfast._C levels: " + "; ".join(f"{n} [{' '.join(f) or 'no -m flags'}]" for n, _, f in kept))
        common = cpu_common_flags()
        kernel_sources = [s for s in ext.sources
                          if s not in CPU_BASE_SOURCES + CPU_AMX_SOURCES + CPU_BF16_SOURCES]
        built = [(f"FCN_CPU_BUILT_{ns[len('cpu_'):].upper()}", "1") for _, ns, _ in kept]
        amx = IS_X86_64 and self._accepts(cpu_baseline_flags() + AMX_FLAGS)
        say("fcnfast._C AMX kernels: " + (f"built [{' '.join(AMX_FLAGS)}]" if amx else
                                          "not built (the C++ compiler does not accept -mamx-tile)"))
        if amx:
            built.append(("FCN_CPU_BUILT_AMX", "1"))
        bf16 = IS_X86_64 and self._accepts(cpu_baseline_flags() + BF16_FLAGS)
        say("fcnfast._C AVX-512 BF16 kernels: " + (
            f"built [{' '.join(BF16_FLAGS)}]" if bf16 else
            "not built (the C++ compiler does not accept -mavx512bf16)"))
        if bf16:
            built.append(("FCN_CPU_BUILT_BF16", "1"))
        jobs_ = [(src, os.path.join(self.build_temp, "cpu_base"), list(ext.define_macros) + built,
                  cpu_flags()) for src in CPU_BASE_SOURCES]
        for name, ns, flags in kept:
            macros = list(ext.define_macros) + [
                ("FCN_CPU_CAPABILITY", ns), ("FCN_CPU_CAPABILITY_NAME", f'"{name}"'),
                ("FCN_CPU_FLAGS", '"' + " ".join(common + flags) + '"')]
            jobs_ += [(src, os.path.join(self.build_temp, ns), macros, common + flags)
                      for src in kernel_sources]
        # Linked last: their copies of inline library code are never the ones kept.
        if bf16:
            jobs_ += [(src, os.path.join(self.build_temp, "cpu_bf16"),
                       list(ext.define_macros) + [("FCN_CPU_CAPABILITY", "cpu_bf16")],
                       common + cpu_baseline_flags() + BF16_FLAGS) for src in CPU_BF16_SOURCES]
        if amx:
            jobs_ += [(src, os.path.join(self.build_temp, "cpu_amx"), list(ext.define_macros),
                       common + cpu_baseline_flags() + AMX_FLAGS) for src in CPU_AMX_SOURCES]

        def one(job):
            src, out_dir, macros, flags = job
            return self.compiler.compile([src], output_dir=out_dir, macros=macros,
                                         include_dirs=ext.include_dirs, extra_postargs=flags,
                                         depends=ext.depends)

        for d in {j[1] for j in jobs_}:
            os.makedirs(d, exist_ok=True)
        with ThreadPoolExecutor(jobs()) as pool:
            return [o for objs in pool.map(one, jobs_) for o in objs]

    def _nvcc(self, sources, ext):
        nvcc = ext.nvcc
        _, gencode = cuda_gencode()
        out_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(out_dir, exist_ok=True)
        host = [a for f in ["-fPIC"] + cpu_baseline_flags() for a in ("-Xcompiler", f)]
        common = [nvcc, "-O3", "-std=c++17", *host, "--expt-relaxed-constexpr", "--fmad=false",
                  "-I", os.path.join(HERE, "csrc"), *gencode]

        def one(src):
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            cmd = common + ["-c", src, "-o", obj]
            say(" ".join(cmd))
            subprocess.check_call(cmd)
            return obj

        with ThreadPoolExecutor(jobs()) as pool:
            return list(pool.map(one, sources))


def extensions():
    include = [os.path.join(HERE, "csrc"), pybind11_include()]
    # Headers and this script: a change to either rebuilds the modules.
    headers = sorted(glob.glob("csrc/*.h")) + ["setup.py"]
    exts = [Extension(  # compiled by BuildExt._cpu_objects (flags: cpu_flags, cpu_levels)
        "fcnfast._C",
        sources=sorted(glob.glob("csrc/cpu/*.cpp")),
        depends=headers + sorted(glob.glob("csrc/cpu/*.h")),
        include_dirs=include,
        extra_link_args=["-fopenmp"],
        language="c++",
    )]
    levels, why = cpu_levels()
    say(f"building fcnfast._C (C++ CPU kernels, {' '.join(cpu_common_flags())}): the module for the "
        f"baseline ({' '.join(cpu_baseline_flags()) or 'the compiler default'}), the kernels once "
        f"per level: {', '.join(name for name, _, _ in levels)} ({why})")
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
        depends=headers + sorted(glob.glob("csrc/cuda/*.h")),
        include_dirs=include + [os.path.join(home, "include")],
        library_dirs=[lib],
        runtime_library_dirs=[lib],
        libraries=["cudart"],
        extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden"] + cpu_baseline_flags(),
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

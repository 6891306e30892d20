"""The one place that imports optional modules: the kernel backends (Triton, the native modules
built from csrc/), the video libraries (PyAV, torchcodec), ONNX (the exporter's onnx and
onnxscript, onnxruntime) and Ray Data.

Each backend answers two questions: can it run here at all (``*_status``), and the module itself
(``triton_kernels``, ``native_module``), which raises one actionable RuntimeError when it cannot.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Tuple


def triton_interpreting() -> bool:
    """TRITON_INTERPRET=1: Triton kernels run on CPU tensors through its numpy interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@lru_cache(maxsize=None)
def _triton_import_error() -> str:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "triton":
            return f"triton cannot be imported ({type(e).__name__}: {e})"
        return ("triton is not installed: pip install 'fcnfast[triton]' (CUDA builds of torch "
                "bring it)")
    except Exception as e:  # broken beside this torch
        return f"triton cannot be imported ({type(e).__name__}: {e})"
    return ""


def triton_status(device_type: str | None = None) -> Tuple[bool, str]:
    """(usable, why not) for Triton kernels on tensors of ``device_type`` (None: on any device)."""
    err = _triton_import_error()
    if err:
        return False, err
    import torch

    cuda = torch.cuda.is_available()
    if device_type is None:
        return (True, "") if (cuda or triton_interpreting()) else (
            False, "Triton needs a CUDA GPU, or TRITON_INTERPRET=1 to run on CPU tensors")
    if device_type == "cuda":
        return (True, "") if cuda else (False, "CUDA is not available")
    if device_type == "cpu":
        return (True, "") if triton_interpreting() else (
            False, "Triton runs CPU tensors only through its interpreter: set TRITON_INTERPRET=1 "
                   "before importing fcnfast (slow; for testing)")
    return False, f"Triton does not run on {device_type} tensors"


def triton_kernels():
    """The ``fcnfast.kernels`` package (Triton launchers); RuntimeError saying why if unusable."""
    ok, why = triton_status()
    if not ok:
        raise RuntimeError(f"backend 'triton' cannot run here: {why}")
    from . import kernels

    return kernels


# --- native modules (csrc/, built by setup.py) ---------------------------------------------------

@lru_cache(maxsize=None)
def _native_import(name: str):
    """(module or None, why not)."""
    import importlib

    try:
        return importlib.import_module(f"fcnfast.{name}"), ""
    except ImportError as e:
        return None, (f"fcnfast.{name} is not built ({e}); reinstall fcnfast with a C++ compiler"
                      + (" and nvcc (CUDA_HOME or PATH)" if name == "_cuda" else ""))


def has_cpp_ops() -> bool:
    return _native_import("_C")[0] is not None


def has_cuda_ops() -> bool:
    """The CUDA module was built and imports (it imports without a GPU, too)."""
    return _native_import("_cuda")[0] is not None


def cpp_status(device_type: str | None = None) -> Tuple[bool, str]:
    mod, why = _native_import("_C")
    if mod is None:
        return False, why
    if device_type not in (None, "cpu"):
        return False, f"the cpp kernels run on CPU tensors, not {device_type}"
    return True, ""


def cuda_status(device_type: str | None = None) -> Tuple[bool, str]:
    mod, why = _native_import("_cuda")
    if mod is None:
        return False, why
    import torch

    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    if device_type not in (None, "cuda"):
        return False, f"the cuda kernels run on CUDA tensors, not {device_type}"
    return True, ""


def native_module(backend: str):
    """``fcnfast._C`` (backend "cpp") or ``fcnfast._cuda`` ("cuda"); RuntimeError saying why not."""
    mod, why = _native_import("_C" if backend == "cpp" else "_cuda")
    if mod is None:
        raise RuntimeError(f"backend {backend!r} cannot run here: {why}")
    return mod


def native_cpu_capability() -> str | None:
    """The instruction-set level of the CPU kernels that ``fcnfast._C`` chose at import
    ("default", "avx2", "avx512"; FCNFAST_CPU_CAPABILITY forces a lower one), or None when the
    module is not built (or predates the levels)."""
    mod = _native_import("_C")[0]
    choose = getattr(mod, "cpu_capability", None)
    return None if choose is None else choose()


# --- video libraries ------------------------------------------------------------------------------

def av_module():
    """PyAV (FFmpeg's decoders, encoders and muxers); RuntimeError saying how to get it."""
    try:
        import av
    except ImportError as e:
        raise RuntimeError(f"video needs PyAV, which is not installed ({e}): "
                           "pip install 'fcnfast[video]' (from a checkout: pip install '.[video]'; "
                           "or pip install av)") from None
    return av


def torchcodec_decoder_class():
    """torchcodec's ``VideoDecoder`` (NVDEC decoding into GPU memory), or None where torchcodec is
    missing or does not load beside this torch."""
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception:  # noqa: BLE001 - missing, or built for another torch/FFmpeg
        return None
    return VideoDecoder


# --- deployment and scale-out ---------------------------------------------------------------------

def _missing(e: ImportError, what: str, extra: str, packages: str) -> RuntimeError:
    return RuntimeError(f"{what} needs {packages}, which is not installed ({e}): "
                        f"pip install 'fcnfast[{extra}]' (from a checkout: pip install '.[{extra}]')")


def onnx_exporter():
    """The modules ``torch.onnx.export(dynamo=True)`` writes with (onnx, onnxscript); RuntimeError
    saying how to get them."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise _missing(e, "ONNX export", "onnx", "onnx and onnxscript") from None
    return onnx


def onnxruntime_module(required: bool = True):
    """onnxruntime; None where it is missing and not ``required`` (else RuntimeError)."""
    try:
        import onnxruntime
    except ImportError as e:
        if not required:
            return None
        raise _missing(e, "running an ONNX file", "onnx", "onnxruntime") from None
    return onnxruntime


def ray_module():
    """Ray with Ray Data (``ray.data``); RuntimeError saying how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise _missing(e, "fcnfast.distributed", "ray", "Ray Data (ray[data])") from None
    return ray


def arrow_modules():
    """(pyarrow, pyarrow.parquet), which Ray Data brings; RuntimeError saying how to get them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as e:
        raise _missing(e, "the Parquet table", "ray", "pyarrow") from None
    return pyarrow, pyarrow.parquet

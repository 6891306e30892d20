"""The one place that imports optional kernel modules (Triton now; the native modules later).

Each backend answers two questions: can it run here at all (``*_status``), and the module itself
(``triton_kernels``), which raises one actionable RuntimeError when it cannot.
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
    except Exception as e:  # missing, or broken beside this torch
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

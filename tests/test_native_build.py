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

"""Shared helpers for the head-op contract tests (one test file per op)."""
from __future__ import annotations

import pytest
import torch

import fcnfast.ops as ops
from fcnfast import contract

# Relative error ‖y − ref‖ / ‖ref‖ allowed against the float64 reference (head-ops.md).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Machine epsilon of each dtype: labels must agree wherever the reference's top-2 margin is
# clearly above the rounding of the inputs and of the accumulation.
EPS = {torch.float32: 1.2e-7, torch.float16: 9.8e-4, torch.bfloat16: 7.8e-3}


def kernel_backend_params():
    """pytest params (backend, device) for every kernel backend; unusable ones skip."""
    return [
        pytest.param("triton", "cpu", id="triton-cpu"),
        pytest.param("triton", "cuda", id="triton-cuda", marks=pytest.mark.needs_cuda),
        pytest.param("cpp", "cpu", id="cpp-cpu"),
        pytest.param("cuda", "cuda", id="cuda-cuda", marks=pytest.mark.needs_cuda),
    ]


def require(backend: str, device: str):
    ok, why = ops.availability("preprocess", backend, device)
    if not ok:
        pytest.skip(f"{backend} on {device}: {why}")


@pytest.fixture
def poisoned(monkeypatch):
    """Make every op output start as garbage (NaN / 0xAB), so unwritten elements show."""
    real = contract.new_output

    def poison(shape, dtype, device):
        t = real(shape, dtype, device)
        if dtype.is_floating_point:
            t.fill_(float("nan"))
        else:
            t.fill_(0xAB if dtype == torch.uint8 else -12345)
        return t

    monkeypatch.setattr(contract, "new_output", poison)
    return poison


def assert_rel_close(y: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "output"):
    """‖y − ref‖ / ‖ref‖ <= tol, with every value finite; verbose on failure."""
    assert y.shape == ref.shape, f"{what}: shape {tuple(y.shape)} != {tuple(ref.shape)}"
    y64, r64 = y.double().cpu(), ref.double().cpu()
    bad = ~torch.isfinite(y64) & torch.isfinite(r64)
    assert not bad.any(), (f"{what}: {int(bad.sum())} non-finite values (unwritten?), first at "
                           f"{tuple(bad.nonzero()[0].tolist())}")
    err = (y64 - r64).norm() / r64.norm().clamp_min(1e-30)
    if err > tol:
        diff = (y64 - r64).abs()
        where = tuple(torch.nonzero(diff == diff.max())[0].tolist())
        raise AssertionError(f"{what}: relative error {float(err):.3g} > {tol:g}; max |diff| "
                             f"{float(diff.max()):.3g} at {where} (got {float(y64[where]):.6g}, "
                             f"want {float(r64[where]):.6g})")


def firm_mask(scores64: torch.Tensor, dtype: torch.dtype, taps: int = 4) -> torch.Tensor:
    """Pixels whose float64 top-2 class margin exceeds the dtype's rounding error (N, H, W)."""
    if scores64.shape[1] == 1:
        return torch.ones_like(scores64[:, 0], dtype=torch.bool)
    top2 = scores64.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    scale = scores64.abs().amax(dim=1)
    return margin > 8 * taps * EPS[dtype] * scale.clamp_min(1e-30)


def assert_labels_firm(labels, ref_labels, firm, what="labels"):
    assert labels.shape == ref_labels.shape and labels.dtype == ref_labels.dtype, \
        f"{what}: {tuple(labels.shape)} {labels.dtype} vs {tuple(ref_labels.shape)} {ref_labels.dtype}"
    wrong = (labels.cpu() != ref_labels.cpu()) & firm.cpu()
    assert firm.float().mean() > 0.5, "test too weak: most pixels are near ties"
    assert not wrong.any(), (f"{what}: {int(wrong.sum())} of {int(firm.sum())} firm pixels differ, "
                             f"first at {tuple(wrong.nonzero()[0].tolist())}")

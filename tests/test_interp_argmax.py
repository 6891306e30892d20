"""Op 3, interp_argmax, on every kernel backend against the PyTorch reference.

Labels must equal the float64 reference's wherever its top-2 margin is above the float32 error (the
kernel interpolates in float32 from exactly the values the reference sees), and exactly on
constructed ties and NaN cases; return_scores within TOLERANCE of the reference's winning score.
With float32 inputs the winning scores also match PyTorch's own float32 interpolation to a few ulps:
the same source indices and weights (PyTorch's rule, scale computed in float32).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fcnfast.ops as ops
from fcnfast import contract

from op_testing import (TOLERANCE, assert_labels_firm, assert_rel_close, firm_mask,
                        kernel_backend_params, poisoned, require)  # noqa: F401 (fixture)

BACKENDS = kernel_backend_params()
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def randn(*shape, dtype=torch.float32, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def run(x, size, backend, device, return_scores=True):
    return ops.interp_argmax(x.to(device), size, return_scores=return_scores, backend=backend)


def scores64(x, size):
    return F.interpolate(x.double().cpu(), size=size, mode="bilinear", align_corners=False)


# (dtype, C, (n, h, w), (H, W)): FCN-ResNet's 8× upsampling, non-integer ratios, downsampling,
# one axis unchanged (PyTorch's copy rule), same size, 1×1 in and out, primes, batch 2.
CASES = [
    pytest.param(F32, 21, (1, 8, 8), (64, 64), id="f32-C21-8x"),
    pytest.param(F16, 21, (2, 7, 5), (61, 37), id="f16-C21-primes-batch2"),
    pytest.param(BF16, 33, (1, 33, 29), (10, 7), id="bf16-C33-down"),
    pytest.param(F32, 2, (1, 5, 9), (5, 20), id="f32-C2-same-rows"),
    pytest.param(F16, 2, (1, 9, 6), (23, 6), id="f16-C2-same-cols"),
    pytest.param(F32, 33, (2, 6, 6), (6, 6), id="f32-C33-same-size"),
    pytest.param(BF16, 21, (1, 1, 1), (13, 17), id="bf16-C21-1x1in"),
    pytest.param(F32, 300, (1, 9, 11), (1, 1), id="f32-C300-1x1out"),
    pytest.param(F32, 1, (2, 4, 3), (11, 7), id="f32-C1"),
    pytest.param(F16, 300, (1, 3, 4), (8, 13), id="f16-C300"),
    pytest.param(F32, 21, (1, 12, 20), (17, 9), id="f32-C21-up-rows-down-cols"),
    pytest.param(F32, 5, (1, 3, 3), (97, 5), id="f32-C5-prime-rows"),
    pytest.param(F16, 3, (1, 1, 1), (1, 1), id="f16-C3-1x1-to-1x1"),
]


@pytest.mark.parametrize("dtype,c,shape,size", CASES)
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_matches_reference(backend, device, dtype, c, shape, size, poisoned):
    require(backend, device)
    n, h, w = shape
    x = randn(n, c, h, w, dtype=dtype)
    labels, scores = run(x, size, backend, device)
    assert labels.device.type == scores.device.type == device
    assert labels.dtype == contract.label_dtype(c) and scores.dtype == dtype
    ref_labels, ref_scores = ops.interp_argmax(x.double().cpu(), size, return_scores=True,
                                               backend="torch")
    firm = firm_mask(scores64(x, size), torch.float32, taps=4)
    assert_labels_firm(labels, ref_labels, firm)
    assert_rel_close(scores, ref_scores, TOLERANCE[dtype], "scores")
    only = run(x, size, backend, device, return_scores=False)
    assert torch.equal(only.cpu(), labels.cpu()), "labels differ with return_scores=False"
    if dtype == torch.float32:
        # PyTorch's own float32 interpolation: same indices and weights, so a few ulps at most.
        _, ref32 = ops.interp_argmax(x, size, return_scores=True, backend="torch")
        torch.testing.assert_close(scores.cpu(), ref32, rtol=2e-6, atol=2e-6)


# --- ties and NaN: exact ---------------------------------------------------------------------

def _assert_exact(x, size, backend, device, expect=None):
    labels, scores = run(x, size, backend, device)
    ref_labels, ref_scores = ops.interp_argmax(x.cpu(), size, return_scores=True, backend="torch")
    labels, scores = labels.cpu(), scores.cpu()
    if expect is not None:
        assert (ref_labels == expect).all(), "test construction: the reference disagrees"
        assert (labels == expect).all(), f"labels {labels.unique().tolist()} != {expect}"
    mismatch = labels != ref_labels
    assert not mismatch.any(), (f"{int(mismatch.sum())} labels differ from the reference, first at "
                                f"{tuple(mismatch.nonzero()[0].tolist())}")
    assert torch.equal(scores.isnan(), ref_scores.isnan()), "NaN scores differ from the reference"
    return labels, scores


@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_ties_go_to_lowest_class(backend, device, dtype, poisoned):
    require(backend, device)
    c = 7
    x = randn(2, c, 5, 6, dtype=dtype)
    x[:, 4] += 8.0
    x[:, 2] = x[:, 4]  # classes 2 and 4 tie everywhere and win
    _assert_exact(x, (13, 11), backend, device, expect=2)
    same = x[:, :1].expand(-1, c, -1, -1).contiguous()
    _assert_exact(same, (3, 17), backend, device, expect=0)
    _assert_exact(torch.zeros_like(x), (9, 9), backend, device, expect=0)


# The interpreter's numpy warns about the NaN it is asked to produce.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("size", [(12, 16), (3, 4), (6, 16), (6, 8)],
                         ids=["up", "down", "same-rows", "same-size"])
@pytest.mark.parametrize("dtype", [F32, F16])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nan_one_class_wins_then_first(backend, device, dtype, size, poisoned):
    require(backend, device)
    c = 6
    x = randn(1, c, 6, 8, dtype=dtype) * 0.1
    x[:, 1] += 5.0  # class 1 wins firmly wherever no NaN reaches
    x[0, 4, 2, 3] = float("nan")
    labels, scores = _assert_exact(x, size, backend, device)
    assert (labels == 4).any() and (labels == 1).any()
    assert torch.equal(scores.isnan(), labels == 4)
    x[0, 2, 2, 3] = float("nan")  # two NaN classes: the first wins
    labels, _ = _assert_exact(x, size, backend, device)
    assert (labels == 2).any() and not (labels == 4).any()
    # inf: a zero weight still multiplies it (0·inf = NaN), as in PyTorch.
    x = randn(1, c, 6, 8, dtype=dtype) * 0.1
    x[:, 1] += 5.0
    x[0, 3, 4, 4] = float("inf")
    x[0, 5, 1, 6] = float("-inf")
    _assert_exact(x, size, backend, device)


# --- dtypes, layouts, empty ------------------------------------------------------------------

@pytest.mark.parametrize("c", [256, 257])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_label_dtype_and_top_class(backend, device, c, poisoned):
    require(backend, device)
    x = randn(1, c, 2, 3) * 0.1
    x[:, c - 1] += 1.0
    labels = run(x, (3, 5), backend, device, return_scores=False)
    assert labels.dtype == (torch.uint8 if c <= 256 else torch.int32)
    assert (labels.cpu().long() == c - 1).all()


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_non_contiguous_inputs(backend, device, poisoned):
    require(backend, device)
    for x in (randn(2, 10, 7, 12)[:, 1::2, :, ::3],
              randn(1, 5, 6, 7).contiguous(memory_format=torch.channels_last),
              randn(1, 9, 5, 4).transpose(2, 3)):
        assert not x.is_contiguous()
        labels, scores = run(x, (19, 10), backend, device)
        ref_labels, ref_scores = ops.interp_argmax(x.double(), (19, 10), return_scores=True,
                                                   backend="torch")
        assert_labels_firm(labels, ref_labels, firm_mask(scores64(x, (19, 10)), torch.float32))
        assert_rel_close(scores, ref_scores, TOLERANCE[torch.float32], "scores")


@pytest.mark.parametrize("return_scores", [False, True])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_empty_batch(backend, device, return_scores):
    require(backend, device)
    x = torch.empty(0, 300, 4, 4, dtype=torch.bfloat16, device=device)
    out = ops.interp_argmax(x, (5, 6), return_scores=return_scores, backend=backend)
    labels = out[0] if return_scores else out
    assert labels.shape == (0, 5, 6) and labels.dtype == torch.int32
    if return_scores:
        assert out[1].shape == (0, 5, 6) and out[1].dtype == torch.bfloat16


# --- clear errors ----------------------------------------------------------------------------

def _errors():
    x = randn(1, 3, 4, 4)
    return [
        ("x 3-D", (x[0], (5, 5)), ValueError, "x must be 4-D"),
        ("x 5-D", (x[None], (5, 5)), ValueError, "x must be 4-D"),
        ("x float64", (x.double(), (5, 5)), TypeError, "x must be one of float32"),
        ("x uint8", (x.to(torch.uint8), (5, 5)), TypeError, "x must be one of float32"),
        ("no classes", (x[:, :0], (5, 5)), ValueError, "at least one class and one pixel"),
        ("no pixels", (x[:, :, :0], (5, 5)), ValueError, "at least one class and one pixel"),
        ("size None", (x, None), TypeError, "size must be an int or a pair of ints"),
        ("size 0", (x, (0, 5)), ValueError, "size must be positive"),
        ("size negative int", (x, -3), ValueError, "size must be positive"),
        ("size float", (x, (5.0, 5)), TypeError, "size must be an int or a pair of ints"),
        ("size 3 ints", (x, (5, 5, 5)), TypeError, "size must be an int or a pair of ints"),
    ]


@pytest.mark.parametrize("case", _errors(), ids=lambda c: c[0])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_clear_errors(backend, device, case):
    require(backend, device)
    _, (x, size), exc, message = case
    with pytest.raises(exc, match=re.escape(message)):
        ops.interp_argmax(x.to(device), size, backend=backend)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_not_a_tensor(backend, device):
    require(backend, device)
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        ops.interp_argmax(np.zeros((1, 3, 4, 4), np.float32), (5, 5), backend=backend)


# --- the source index is one fused multiply-add, as in PyTorch's kernels ----------------------

@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("src,dst", [((20, 20), (18, 20)), ((7, 13), (18, 29))])
def test_scores_match_torch_float32_at_inexact_scales(backend, device, src, dst):
    """Scales like 20/18 are inexact in float32: the weights must round as PyTorch's do."""
    require(backend, device)
    x = randn(1, 5, *src, seed=11)
    labels, scores = run(x, dst, backend, device)
    want = F.interpolate(x, size=dst, mode="bilinear", align_corners=False)
    torch.testing.assert_close(scores.cpu(), want.max(1).values, rtol=0, atol=2e-6)
    firm = firm_mask(scores64(x, dst), F32)
    assert_labels_firm(labels, want.argmax(1).to(labels.dtype), firm)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_infinite_input_where_a_weight_is_tiny(backend, device):
    """A weight that rounds to a tiny value, not to 0: -inf times it stays -inf (0·inf would be NaN
    and win the argmax)."""
    require(backend, device)
    x = randn(1, 3, 2, 8, seed=12)
    x[0, 1, 1, 3] = float("-inf")
    labels = run(x, (6, 15), backend, device, return_scores=False)
    want = F.interpolate(x, size=(6, 15), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(labels.cpu().long(), want)

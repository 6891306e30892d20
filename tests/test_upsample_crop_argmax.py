"""Op 2, upsample_crop_argmax, on every kernel backend against the PyTorch reference (float64).

Labels must equal the reference's wherever its top-2 margin is above the float32 accumulation
error (the kernels compute in float32 from exactly the values the float64 reference sees), and
exactly on constructed ties and NaN cases; return_scores within TOLERANCE of the reference's winning
score. The general (learned-weight) path runs one program per phase (output pixel mod s), which the
interpreter executes slowly, so its large-stride cases use small crops.
"""
from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fcnfast.ops as ops
from fcnfast import contract
from fcnfast.contract import upsample_filt

from op_testing import (TOLERANCE, assert_labels_firm, assert_rel_close, firm_mask,
                        kernel_backend_params, poisoned, require)  # noqa: F401 (fixture)

BACKENDS = kernel_backend_params()


def bilinear_weight(c, k, dtype=torch.float32):
    w = torch.zeros(c, c, k, k, dtype=torch.float64)
    f = torch.from_numpy(upsample_filt(k))
    for i in range(c):
        w[i, i] = f
    return w.to(dtype)


def learned_weight(c, k, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(c, c, k, k, generator=g) / (2 * c) ** 0.5).to(dtype)


def scores64(x, weight, s, offset, size):
    """The reference's full per-class scores in float64 (N, C, H, W), on the CPU."""
    oy, ox = contract.pair(offset, "offset")
    h, w = contract.pair(size, "size")
    full = F.conv_transpose2d(x.double().cpu(), weight.double().cpu(), stride=s)
    return full[..., oy:oy + h, ox:ox + w]


def reference(x, weight, s, offset, size):
    return ops.upsample_crop_argmax(x.double().cpu(), weight.double().cpu(), s, offset, size,
                                    return_scores=True, backend="torch")


def run(x, weight, s, offset, size, backend, device, return_scores=True):
    return ops.upsample_crop_argmax(x.to(device), weight.to(device), s, offset, size,
                                    return_scores=return_scores, backend=backend)


def check_matches_reference(x, weight, s, offset, size, backend, device, terms):
    """Labels on firm pixels, winning scores within tolerance, dtypes, labels-only call."""
    c = x.shape[1]
    labels, scores = run(x, weight, s, offset, size, backend, device)
    ref_labels, ref_scores = reference(x, weight, s, offset, size)
    assert labels.dtype == contract.label_dtype(c) and scores.dtype == x.dtype
    assert labels.device.type == scores.device.type == device
    # 4 taps per input class, `terms` input classes per output value, in float32.
    firm = firm_mask(scores64(x, weight, s, offset, size), torch.float32, taps=4 * terms)
    assert_labels_firm(labels, ref_labels, firm)
    assert_rel_close(scores, ref_scores, TOLERANCE[x.dtype], "scores")
    only = run(x, weight, s, offset, size, backend, device, return_scores=False)
    assert torch.equal(only.cpu(), labels.cpu()), "labels differ with return_scores=False"
    return labels, scores


def randn(*shape, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16

# (dtype, k, s, C, (n, h, w), offset, size): FCN geometries, odd sizes, crops ending at the edge.
BILINEAR_CASES = [
    pytest.param(F32, 16, 8, 21, (1, 5, 6), (13, 5), (29, 37), id="f32-16/8-C21"),
    pytest.param(F16, 32, 16, 33, (2, 3, 4), (7, 16), (41, 53), id="f16-32/16-C33-batch2"),
    pytest.param(BF16, 64, 32, 2, (1, 1, 1), (0, 0), (64, 64), id="bf16-64/32-C2-1x1in-whole"),
    pytest.param(F32, 63, 32, 21, (1, 2, 3), (31, 0), (64, 95), id="f32-63/32-C21-edge"),
    pytest.param(F32, 4, 2, 300, (1, 4, 5), (1, 1), (9, 11), id="f32-4/2-C300-edge"),
    pytest.param(F16, 3, 2, 1, (2, 4, 5), (0, 2), (9, 9), id="f16-3/2-C1"),
    pytest.param(BF16, 16, 8, 21, (1, 3, 3), (7, 9), (1, 1), id="bf16-16/8-C21-1x1out"),
    pytest.param(F32, 32, 16, 2, (2, 4, 4), (15, 3), (37, 61), id="f32-32/16-C2-primes"),
    pytest.param(F32, 3, 4, 5, (1, 4, 4), (1, 2), (13, 13), id="f32-3/4-k<s-gaps"),
]


@pytest.mark.parametrize("dtype,k,s,c,shape,offset,size", BILINEAR_CASES)
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_bilinear_matches_reference(backend, device, dtype, k, s, c, shape, offset, size, poisoned):
    require(backend, device)
    n, h, w = shape
    x = randn(n, c, h, w, dtype=dtype)
    weight = bilinear_weight(c, k, dtype)
    assert contract.bilinear_filter(weight) is not None
    check_matches_reference(x, weight, s, offset, size, backend, device, terms=1)


# The general path: learned C×C weights (large strides get small crops: one program per phase).
LEARNED_CASES = [
    pytest.param(F32, F32, 4, 2, 21, (1, 6, 7), (1, 2), (11, 13), id="f32-4/2-C21"),
    pytest.param(F16, F16, 4, 2, 33, (2, 5, 5), (0, 0), (12, 12), id="f16-4/2-C33-whole-batch2"),
    pytest.param(BF16, BF16, 3, 2, 2, (1, 4, 6), (1, 0), (8, 13), id="bf16-3/2-C2-edge"),
    pytest.param(F16, F32, 4, 2, 21, (1, 5, 4), (2, 1), (9, 8), id="x-f16-weight-f32"),
    pytest.param(F32, F32, 16, 8, 2, (1, 2, 2), (5, 3), (5, 6), id="f32-16/8-C2"),
    pytest.param(F32, F32, 64, 32, 2, (1, 1, 2), (30, 60), (3, 5), id="f32-64/32-C2-1row"),
    pytest.param(BF16, BF16, 63, 32, 21, (1, 2, 2), (60, 93), (3, 2), id="bf16-63/32-C21-edge"),
    # more classes than two blocks of either class axis, a multiple of neither
    pytest.param(F32, F32, 4, 2, 131, (1, 2, 3), (1, 1), (4, 5), id="f32-4/2-C131"),
    pytest.param(F32, F32, 3, 4, 3, (1, 3, 3), (0, 1), (9, 7), id="f32-3/4-k<s-gaps"),
    pytest.param(F16, F16, 4, 2, 5, (1, 1, 1), (2, 3), (1, 1), id="f16-4/2-C5-1x1in-1x1out"),
]


@pytest.mark.parametrize("dtype,wdtype,k,s,c,shape,offset,size", LEARNED_CASES)
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_learned_matches_reference(backend, device, dtype, wdtype, k, s, c, shape, offset, size,
                                   poisoned):
    require(backend, device)
    n, h, w = shape
    x = randn(n, c, h, w, dtype=dtype)
    weight = learned_weight(c, k, wdtype)
    check_matches_reference(x, weight, s, offset, size, backend, device, terms=c)


# --- which path ------------------------------------------------------------------------------

class _Spy:
    """Stands in for a jitted kernel; counts launches (``kernel[grid](...)``)."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


def _spies(monkeypatch, backend="triton"):
    """(bilinear, general) launch counters for the backend's upsample_crop_argmax kernels."""
    if backend in ("cpp", "cuda"):
        from fcnfast.ops import native

        bilinear, general = _Spy(None), _Spy(None)
        real = native._module

        class Module:
            def __init__(self, mod):
                self.mod = mod

            def __getattr__(self, name):
                fn = getattr(self.mod, name)
                if name != "upsample_crop_argmax":
                    return fn

                def launch(x, weight, kind, *rest):
                    (general if kind == native.WEIGHT_LEARNED else bilinear).launches += 1
                    return fn(x, weight, kind, *rest)
                return launch

        monkeypatch.setattr(native, "_module", lambda t: Module(real(t)))
        return bilinear, general
    mod = importlib.import_module("fcnfast.kernels.upsample_crop_argmax")
    spies = {}
    for name in ("_upsample_bilinear_argmax_kernel", "_upsample_general_argmax_kernel"):
        spies[name] = _Spy(getattr(mod, name))
        monkeypatch.setattr(mod, name, spies[name])
    return spies["_upsample_bilinear_argmax_kernel"], spies["_upsample_general_argmax_kernel"]


def _nudged(w):
    w = w.clone()
    w[1, 1, 0, 0] = torch.nextafter(w[1, 1, 0, 0], torch.tensor(float("inf"), dtype=w.dtype))
    return w


def _tiny_off_diagonal(w):
    w = w.clone()
    w[0, 2, 1, 1] = 1e-6
    return w


def _mixing(w):
    w = w.clone()
    w[0, 1] = 2.0 * w[0, 0]  # class 0's input feeds class 1 strongly
    return w


@pytest.mark.parametrize("variant", [_nudged, _tiny_off_diagonal, _mixing],
                         ids=["diag-1ulp", "off-diag-1e-6", "off-diag-mixing"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_near_bilinear_takes_general_path(backend, device, variant, monkeypatch, poisoned):
    require(backend, device)
    c, k, s = 3, 4, 2
    x = randn(1, c, 5, 6)
    base = bilinear_weight(c, k)
    weight = variant(base)
    assert contract.bilinear_filter(weight) is None
    bilinear, general = _spies(monkeypatch, backend)
    labels, _ = check_matches_reference(x, weight, s, (1, 1), (9, 11), backend, device, terms=c)
    assert general.launches == 2 and bilinear.launches == 0
    if variant is _mixing:  # the bilinear answer would be wrong here: the test can tell paths apart
        wrong = reference(x, base, s, (1, 1), (9, 11))[0]
        assert not torch.equal(wrong, labels.cpu())


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_diagonal_bilinear_takes_fast_path(backend, device, monkeypatch):
    require(backend, device)
    weight = bilinear_weight(4, 16, torch.float16).transpose(2, 3)  # non-contiguous, still bilinear
    assert not weight.is_contiguous() and contract.bilinear_filter(weight) is not None
    bilinear, general = _spies(monkeypatch, backend)
    run(randn(1, 4, 3, 3, dtype=torch.float16), weight, 8, (4, 4), (20, 21), backend, device)
    assert bilinear.launches == 1 and general.launches == 0


# --- ties and NaN: exact ---------------------------------------------------------------------

def _assert_exact(x, weight, s, offset, size, backend, device, expect=None):
    labels, scores = run(x, weight, s, offset, size, backend, device)
    ref_labels, ref_scores = ops.upsample_crop_argmax(x.cpu(), weight.cpu(), s, offset, size,
                                                      return_scores=True, backend="torch")
    labels, scores = labels.cpu(), scores.cpu()
    if expect is not None:
        assert (ref_labels == expect).all(), "test construction: the reference disagrees"
        assert (labels == expect).all(), f"labels {labels.unique().tolist()} != {expect}"
    mismatch = labels != ref_labels
    assert not mismatch.any(), (f"{int(mismatch.sum())} labels differ from the reference, first at "
                                f"{tuple(mismatch.nonzero()[0].tolist())}")
    assert torch.equal(scores.isnan(), ref_scores.isnan()), "NaN scores differ from the reference"
    return labels, scores


@pytest.mark.parametrize("learned", [False, True], ids=["bilinear", "learned"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_ties_go_to_lowest_class(backend, device, learned, poisoned):
    require(backend, device)
    c, k, s = 6, 4, 2
    x = randn(2, c, 4, 5).abs() + 0.5
    if learned:
        weight = learned_weight(c, k)
        weight[:, 2] = weight[:, 2].abs() + 3.0
        weight[:, 4] = weight[:, 2]  # classes 2 and 4 score identically and dominate
    else:
        weight = bilinear_weight(c, k)
        x[:, 1] += 5.0
        x[:, 3] = x[:, 1]  # classes 1 and 3 tie everywhere
    _assert_exact(x, weight, s, (1, 2), (7, 9), backend, device, expect=2 if learned else 1)
    # All classes equal, and all zero: class 0.
    same = x[:, :1].expand(-1, c, -1, -1).contiguous()
    _assert_exact(same, weight if not learned else bilinear_weight(c, k), s, 0, (10, 12), backend,
                  device, expect=0)
    _assert_exact(torch.zeros_like(x), weight, s, 0, (10, 12), backend, device, expect=0)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", [F32, F16, BF16])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nan_weights_one_class_wins_then_first(backend, device, dtype, poisoned):
    """A NaN column of a learned weight makes that class NaN everywhere: it wins; of two, the first."""
    require(backend, device)
    c, k, s = 9, 4, 2
    x = randn(1, c, 4, 4, dtype=dtype)
    weight = learned_weight(c, k, dtype)
    weight[:, 5] = float("nan")
    _, scores = _assert_exact(x, weight, s, (1, 1), (7, 8), backend, device, expect=5)
    assert scores.isnan().all()
    weight[:, 3] = float("nan")
    _assert_exact(x, weight, s, (1, 1), (7, 8), backend, device, expect=3)
    # NaN at one kernel position: only pixels with a valid tap there. The crop ends at the edge of
    # the full map, where the tap (iy0 = h) lies outside the input: no term, no NaN there.
    weight = learned_weight(c, k, dtype)
    weight[:, 5, 0, 0] = float("nan")
    labels, scores = _assert_exact(x, weight, s, (1, 1), (9, 9), backend, device)
    assert (labels == 5).any() and not (labels == 5).all()


# The interpreter's numpy matmul warns about the NaN it is asked to produce.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("learned", [False, True], ids=["bilinear", "learned"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nonfinite_inputs_like_reference(backend, device, learned, poisoned):
    """The reference's dense conv multiplies every input class by every weight, zeros included
    (0·NaN = 0·inf = NaN): a non-finite input makes all other classes NaN where it reaches."""
    require(backend, device)
    c = 5
    # (the general path runs one interpreted program per phase: a small stride keeps it quick)
    k, s, size, offset = (4, 2, (7, 9), (1, 0)) if learned else (16, 8, (20, 27), (3, 4))
    x = randn(1, c, 3, 4) * 0.1
    x[:, 2] += 10.0  # class 2 wins firmly everywhere else
    weight = learned_weight(c, k) if learned else bilinear_weight(c, k)
    if learned:
        weight[:, 2] = weight[:, 2].abs() + 1.0
    for ci, value, where in [(3, float("nan"), (1, 1)), (0, float("inf"), (0, 2)),
                             (0, float("-inf"), (2, 3)), (0, float("nan"), (1, 0))]:
        xb = x.clone()
        xb[0, ci, where[0], where[1]] = value
        labels, scores = _assert_exact(xb, weight, s, offset, size, backend, device)
        assert not scores.isfinite().all() and (labels == 2).any()
    # Two classes non-finite at the same input pixel, and an inf in class 0 alone (class 1 wins:
    # its score picks up 0·inf = NaN).
    xb = x.clone()
    xb[0, 1, 1, 2] = float("inf")
    xb[0, 4, 1, 2] = float("nan")
    _assert_exact(xb, weight, s, offset, size, backend, device)
    xb = x.clone()
    xb[0, 0, 1, 1] = float("inf")
    labels, _ = _assert_exact(xb, weight, s, offset, size, backend, device)
    assert learned or (labels == 1).any()
    # One class: no other class to spread to.
    x1 = x[:, 2:3].clone()
    x1[0, 0, 1, 1] = float("nan")
    w1 = bilinear_weight(1, k) if not learned else learned_weight(1, k)
    labels, scores = _assert_exact(x1, w1, s, offset, size, backend, device, expect=0)
    assert scores.isnan().any() and not scores.isnan().all()


# --- dtypes, layouts, empty ------------------------------------------------------------------

@pytest.mark.parametrize("c", [256, 257])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_label_dtype_and_top_class(backend, device, c, poisoned):
    require(backend, device)
    x = randn(1, c, 2, 3) * 0.1
    x[:, c - 1] += 1.0
    labels = run(x, bilinear_weight(c, 4), 2, (1, 1), (3, 5), backend, device, return_scores=False)
    assert labels.dtype == (torch.uint8 if c <= 256 else torch.int32)
    assert (labels.cpu().long() == c - 1).all()


@pytest.mark.parametrize("learned", [False, True], ids=["bilinear", "learned"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_non_contiguous_inputs(backend, device, learned, poisoned):
    require(backend, device)
    c, k, s = 7, 4, 2
    base = randn(2, 2 * c, 6, 11)
    x = base[:, ::2, :, 1::2]  # strided channels and columns
    assert not x.is_contiguous()
    weight = (learned_weight(c, k) if learned else bilinear_weight(c, k)).permute(1, 0, 3, 2)
    weight = weight.contiguous().permute(1, 0, 3, 2)  # same values, non-contiguous
    assert not weight.is_contiguous()
    check_matches_reference(x, weight, s, (2, 1), (9, 10), backend, device,
                            terms=c if learned else 1)
    cl = randn(1, c, 5, 6).contiguous(memory_format=torch.channels_last)
    check_matches_reference(cl, weight, s, (0, 0), (12, 14), backend, device,
                            terms=c if learned else 1)


@pytest.mark.parametrize("return_scores", [False, True])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_empty_batch(backend, device, return_scores):
    require(backend, device)
    x = torch.empty(0, 3, 4, 4, dtype=torch.float16, device=device)
    out = ops.upsample_crop_argmax(x, bilinear_weight(3, 4, torch.float16).to(device), 2, 1, (5, 6),
                                   return_scores=return_scores, backend=backend)
    labels = out[0] if return_scores else out
    assert labels.shape == (0, 5, 6) and labels.dtype == torch.uint8
    if return_scores:
        assert out[1].shape == (0, 5, 6) and out[1].dtype == torch.float16


# --- clear errors ----------------------------------------------------------------------------

def _errors():
    x = randn(1, 3, 4, 4)
    w = bilinear_weight(3, 4)
    return [
        ("x 3-D", (x[0], w, 2, 0, (5, 5)), ValueError, "x must be 4-D"),
        ("x float64", (x.double(), w, 2, 0, (5, 5)), TypeError, "x must be one of float32"),
        ("x int", (x.int(), w, 2, 0, (5, 5)), TypeError, "x must be one of float32"),
        ("weight float64", (x, w.double(), 2, 0, (5, 5)), TypeError, "weight must be one of"),
        ("weight 3-D", (x, w[0], 2, 0, (5, 5)), ValueError, "weight must be 4-D"),
        ("C mismatch", (x, bilinear_weight(4, 4), 2, 0, (5, 5)), ValueError,
         "weight must be (C, C, k, k) with C = 3"),
        ("kernel not square", (x, w[..., :3], 2, 0, (5, 5)), ValueError, "weight must be (C, C, k, k)"),
        ("k > 2s", (x, bilinear_weight(3, 5), 2, 0, (5, 5)), ValueError, "k <= 2*stride"),
        ("stride 0", (x, w, 0, 0, (5, 5)), ValueError, "stride must be a positive int"),
        ("size None", (x, w, 2, 0, None), ValueError, "needs size=(H, W)"),
        ("size 0", (x, w, 2, 0, (0, 5)), ValueError, "size must be positive"),
        ("size negative", (x, w, 2, 0, (5, -1)), ValueError, "size must be positive"),
        ("size 3 ints", (x, w, 2, 0, (5, 5, 5)), TypeError, "size must be an int or a pair of ints"),
        ("offset negative", (x, w, 2, (-1, 0), (5, 5)), ValueError, "offset must be >= 0"),
        ("crop too large", (x, w, 2, (1, 0), (10, 10)), ValueError, "exceeds the map (10, 10)"),
        ("crop too wide", (x, w, 2, 0, (4, 11)), ValueError, "exceeds the map"),
    ]


@pytest.mark.parametrize("case", _errors(), ids=lambda c: c[0])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_clear_errors(backend, device, case):
    require(backend, device)
    _, (x, w, s, offset, size), exc, message = case
    with pytest.raises(exc, match=re.escape(message)):
        ops.upsample_crop_argmax(x.to(device), w.to(device), s, offset, size, backend=backend)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_not_a_tensor(backend, device):
    require(backend, device)
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        ops.upsample_crop_argmax(np.zeros((1, 3, 4, 4), np.float32), bilinear_weight(3, 4), 2, 0,
                                 (5, 5), backend=backend)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_weight_on_another_device(backend, device):
    require(backend, device)
    if device == "cpu":
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="weight is on cpu but x is on cuda"):
        ops.upsample_crop_argmax(randn(1, 3, 4, 4).to(device), bilinear_weight(3, 4), 2, 0, (5, 5),
                                 backend=backend)

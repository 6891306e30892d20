"""Op 1, upsample_crop_add, on every kernel backend against the PyTorch reference (float64).

The kernel's output must lie within TOLERANCE (relative, ‖y − ref‖ / ‖ref‖) of the reference op
run on the same inputs converted to float64, with every element written (outputs are poisoned).
Cases cover every released geometry (4/2, 16/8, 32/16, 64/32, 63/32) plus 3/2, 2/2 and k < s;
1×1 and prime-sized inputs; crops that end at the edge of the full map and of the skip map; the
bilinear (depthwise) and learned (C×C) paths; precomputed and fused skip scores; non-contiguous
views; and every argument error. The learned path runs one program per phase (output pixel mod s),
which the interpreter executes slowly, so its large-stride cases use small crops.
"""
from __future__ import annotations

import importlib

import pytest
import torch

import fcnfast
import fcnfast.ops as ops
from fcnfast import contract
from fcnfast.models.init import bilinear_weight

from op_testing import (DTYPES, TOLERANCE, assert_rel_close, kernel_backend_params,  # noqa: F401
                        poisoned, require)

BACKENDS = kernel_backend_params()


# --- inputs -------------------------------------------------------------------------------------

def randn(*shape, dtype=torch.float32, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g).clamp_(-3, 3) * scale).to(dtype)


def learned_weight(c, k, dtype=torch.float32, seed=0):
    return randn(c, c, k, k, dtype=dtype, seed=seed, scale=(2.0 * c) ** -0.5)


def make_weight(kind, c, k, dtype):
    return bilinear_weight(c, c, k).to(dtype) if kind == "bilinear" else learned_weight(c, k, dtype)


def full_size(h, w, k, s):
    return (h - 1) * s + k, (w - 1) * s + k


def reference(x, weight, s, skip=None, **kw):
    """The reference op on the same values in float64, on the CPU."""
    d = {key: (v.double().cpu() if isinstance(v, torch.Tensor) else v) for key, v in kw.items()}
    skip = None if skip is None else skip.double().cpu()
    return ops.upsample_crop_add(x.double().cpu(), weight.double().cpu(), s, skip, backend="torch",
                                 **d)


def run(x, weight, s, skip, backend, device, **kw):
    d = {key: (v.to(device) if isinstance(v, torch.Tensor) else v) for key, v in kw.items()}
    return ops.upsample_crop_add(x.to(device), weight.to(device), s,
                                 None if skip is None else skip.to(device), backend=backend, **d)


def check(x, weight, s, skip, backend, device, **kw):
    y = run(x, weight, s, skip, backend, device, **kw)
    ref = reference(x, weight, s, skip, **kw)
    assert y.dtype == x.dtype and y.device.type == device
    assert_rel_close(y, ref, TOLERANCE[x.dtype])
    return y


# --- the covering set of cases ------------------------------------------------------------------
# (id, N, C, (h, w), k, s, weight, skip, offset, size, skip_offset)
# skip: None | "scores" | ("features", F, scale, bias?, 4-D weight?)
# size: None (full map) | "edge" (crop from offset to the far edge of the full map) | (H, W)
# The skip map is made exactly large enough, so every crop with a skip also ends at its edge.
CASES = [
    ("4/2-learned-upscore2", 1, 21, (5, 6), 4, 2, "learned", None, 0, None, 0),
    ("4/2-bilinear-1x1-in", 1, 1, (1, 1), 4, 2, "bilinear", "scores", 0, None, (2, 1)),
    ("16/8-learned-primes", 1, 2, (7, 5), 16, 8, "learned", "scores", (3, 5), "edge", (1, 2)),
    ("16/8-bilinear-batch2-fused", 2, 33, (7, 5), 16, 8, "bilinear",
     ("features", 13, 0.01, True, False), 4, "edge", 3),
    ("16/8-learned-1x1-in", 1, 33, (1, 1), 16, 8, "learned", ("features", 19, 1.0, False, True),
     2, (11, 9), 0),
    ("32/16-bilinear-c300", 1, 300, (3, 2), 32, 16, "bilinear", "scores", 19, (40, 25), (0, 4)),
    ("32/16-learned-crop", 1, 2, (2, 3), 32, 16, "learned", "scores", (10, 14), (9, 7), 1),
    ("64/32-bilinear-1x1-in", 1, 21, (1, 1), 64, 32, "bilinear", None, 0, None, 0),
    ("64/32-learned-tap-seam-edge", 1, 3, (2, 2), 64, 32, "learned", "scores", (88, 29), (8, 6),
     (2, 0)),
    ("63/32-bilinear-fused-pool3", 1, 21, (3, 4), 63, 32, "bilinear",
     ("features", 16, 1e-4, True, False), 18, (61, 75), 0),
    ("63/32-learned-edge", 1, 2, (2, 2), 63, 32, "learned", ("features", 5, 0.01, True, True),
     (90, 1), (5, 6), (1, 1)),
    ("3/2-learned-c33", 1, 33, (7, 5), 3, 2, "learned", "scores", 1, "edge", 0),
    ("3/2-bilinear-c2", 2, 2, (4, 4), 3, 2, "bilinear", None, (0, 1), (9, 8), 0),
    ("2/2-learned-batch2-fused", 2, 21, (5, 6), 2, 2, "learned",
     ("features", 17, 0.01, True, False), 0, None, (2, 3)),
    ("2/2-bilinear-c1", 1, 1, (7, 5), 2, 2, "bilinear", "scores", 1, "edge", 1),
    ("3/4-learned-k<s", 1, 3, (3, 3), 3, 4, "learned", "scores", (1, 2), "edge", 0),
    ("4/2-learned-c300-fused", 1, 300, (3, 2), 4, 2, "learned",
     ("features", 40, 1.0, True, False), 1, "edge", 0),
    ("4/2-learned-c1030", 1, 1030, (1, 2), 4, 2, "learned", "scores", 1, "edge", 0),
]


def make_case(case, dtype):
    """(x, weight, s, skip, kwargs) of a CASES row."""
    _, n, c, (h, w), k, s, wkind, skind, offset, size, skip_offset = case
    x = randn(n, c, h, w, dtype=dtype, seed=2)
    weight = make_weight(wkind, c, k, dtype)
    oy, ox = contract.pair(offset, "offset")
    fh, fw = full_size(h, w, k, s)
    if size == "edge":
        size = (fh - oy, fw - ox)
    out_h, out_w = (fh - oy, fw - ox) if size is None else size
    kw = dict(offset=offset, size=size, skip_offset=skip_offset)
    soy, sox = contract.pair(skip_offset, "skip_offset")
    skip_hw = (soy + out_h, sox + out_w)  # ends exactly at the skip map's edge
    skip = None
    if skind == "scores":
        skip = randn(n, c, *skip_hw, dtype=dtype, seed=3)
    elif skind is not None:
        _, f, scale, bias, four_d = skind
        # Features as large as the scale is small (pool3/pool4 activations), so the skip term
        # weighs as much as the upsampled term.
        skip = randn(n, f, *skip_hw, dtype=dtype, seed=4, scale=1.0 / scale)
        sw = randn(c, f, dtype=dtype, seed=5, scale=f ** -0.5)
        kw.update(skip_weight=sw.reshape(c, f, 1, 1) if four_d else sw, skip_scale=scale,
                  skip_bias=randn(c, dtype=dtype, seed=6) if bias else None)
    return x, weight, s, skip, kw


# The Triton interpreter is slow: its costliest cases run in float32 only. Low precision changes
# the kernel's loads, stores and casts, not its geometry, and the other cases cover those paths.
INTERPRETER_FLOAT32_ONLY = {"16/8-learned-1x1-in", "4/2-learned-c300-fused", "32/16-learned-crop",
                            "64/32-learned-tap-seam-edge", "32/16-bilinear-c300",
                            "63/32-learned-edge", "16/8-learned-primes"}
# C past 1000: the interpreter runs it once, through the half-precision tl.dot path.
INTERPRETER_FLOAT16_ONLY = {"4/2-learned-c1030"}


def test_dot_operands_follow_the_input_dtype():
    """Half-precision inputs take half-precision tl.dot operands (tensor cores on a GPU); under
    the interpreter, whose bfloat16 dot is wrong, bfloat16 operands are rounded then multiplied
    in float32; float32 stays IEEE float32."""
    common = importlib.import_module("fcnfast.kernels.common")
    assert common.dot_mode(4, False, False) == common.dot_mode(4, False, True) == common.DOT_FLOAT32
    assert common.dot_mode(2, False, False) == common.dot_mode(2, False, True) == common.DOT_HALF
    assert common.dot_mode(2, True, False) == common.DOT_HALF
    assert common.dot_mode(2, True, True) == common.DOT_HALF_ROUNDED


def _matches_params():
    for b in BACKENDS:
        for case in CASES:
            for dtype in DTYPES:
                if (b.values == ("triton", "cpu") and dtype != torch.float32
                        and case[0] in INTERPRETER_FLOAT32_ONLY):
                    continue
                if (b.values == ("triton", "cpu") and dtype != torch.float16
                        and case[0] in INTERPRETER_FLOAT16_ONLY):
                    continue
                yield pytest.param(*b.values, case, dtype, marks=b.marks,
                                   id=f"{b.id}-{case[0]}-{str(dtype).replace('torch.', '')}")


@pytest.mark.parametrize("backend,device,case,dtype", list(_matches_params()))
def test_matches_reference(backend, device, case, dtype, poisoned):
    require(backend, device)
    x, weight, s, skip, kw = make_case(case, dtype)
    y = check(x, weight, s, skip, backend, device, **kw)
    fh, fw = full_size(x.shape[2], x.shape[3], weight.shape[2], s)
    oy, ox = contract.pair(kw["offset"], "offset")
    expect = (fh - oy, fw - ox) if kw["size"] is None else tuple(kw["size"])
    assert tuple(y.shape) == (x.shape[0], x.shape[1]) + expect


# --- weights: the bilinear fast path only when exactly diagonal bilinear --------------------------

def _launches(monkeypatch, backend="triton"):
    """Record the bilinear switch of every launch of the backend's kernel (Triton: the BILINEAR
    constexpr; cpp/cuda: the `bilinear` argument of the native call)."""
    if backend in ("cpp", "cuda"):
        native = importlib.import_module("fcnfast.ops.native")
        real_module = native._module
        seen = []

        class NativeSpy:
            def __init__(self, mod):
                self._mod = mod

            def upsample_crop_add(self, *args):
                seen.append(bool(args[2]))
                return self._mod.upsample_crop_add(*args)

        monkeypatch.setattr(native, "_module", lambda t: NativeSpy(real_module(t)))
        return seen
    mod = importlib.import_module("fcnfast.kernels.upsample_crop_add")
    real = mod._upsample_crop_add_kernel
    seen = []

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append(kwargs["BILINEAR"])
                return real[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(mod, "_upsample_crop_add_kernel", Spy())
    return seen


def near_bilinear(kind, c, k):
    w = bilinear_weight(c, c, k)
    if kind == "off-diagonal-epsilon":
        w[0, c - 1, k // 2, 1] = 1e-2
    elif kind == "one-diagonal-value":
        w[c // 2, c // 2, 1, 2] += 1e-2
    return w


@pytest.mark.parametrize("kind", ["exact", "off-diagonal-epsilon", "one-diagonal-value"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_path_choice(backend, device, kind, poisoned, monkeypatch):
    """Near-bilinear weights must take the general path and still match the reference; the
    epsilons change the output far beyond float32's tolerance, so a wrong path shows."""
    require(backend, device)
    c, k, s = 5, 4, 2
    weight = near_bilinear(kind, c, k)
    x = randn(2, c, 6, 7, seed=7)
    skip = randn(2, c, 14, 16, seed=8)
    assert (contract.bilinear_filter(weight) is not None) == (kind == "exact")
    seen = _launches(monkeypatch, backend)
    check(x, weight, s, skip, backend, device, offset=1, size=(13, 15), skip_offset=(1, 1))
    assert seen == [kind == "exact"]


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_bilinear_diagonal_difference_is_visible(backend, device, poisoned):
    """Sanity of the near-bilinear test: the epsilon weights do change the output."""
    require(backend, device)
    x = randn(1, 5, 6, 7, seed=7)
    exact = run(x, near_bilinear("exact", 5, 4), 2, None, backend, device)
    for kind in ("off-diagonal-epsilon", "one-diagonal-value"):
        other = reference(x, near_bilinear(kind, 5, 4), 2)
        err = float((exact.double().cpu() - other).norm() / other.norm())
        assert err > 100 * TOLERANCE[torch.float32], kind


# --- layouts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("wkind", ["bilinear", "learned"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_non_contiguous_inputs(backend, device, wkind, poisoned):
    require(backend, device)
    n, c, f, k, s = 2, 7, 12, 4, 2
    x = randn(n, c, 9, 5, seed=9).transpose(2, 3)  # (n, c, 5, 9), transposed view
    weight = make_weight(wkind, c, k, torch.float32).transpose(2, 3)  # still bilinear if it was
    feats = randn(n, 2 * f, 13, 21, seed=10)[:, ::2, 1:, 2:]  # (n, f, 12, 19), strided view
    skip_weight = randn(f, c, seed=11).t()  # (c, f) transposed
    skip_bias = randn(2 * c, seed=12)[::2]
    for t in (x, weight, feats, skip_weight, skip_bias):
        assert not t.is_contiguous()
    check(x, weight, s, feats, backend, device, offset=1, size=(10, 18), skip_offset=(2, 1),
          skip_weight=skip_weight, skip_bias=skip_bias, skip_scale=0.01)
    scores = randn(n, c, 12, 40, seed=13)[..., ::2]  # (n, c, 12, 20), strided view
    check(x.to(device), weight.to(device), s, scores, backend, device, size=(12, 20))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("wkind", ["bilinear", "learned"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_channels_last_skip_features(backend, device, wkind, dtype, poisoned):
    """Features to score in the trunk's channels-last layout (read as they are by the native
    kernels): the reference's values, and the same values as from planes. Rows longer than the
    CPU kernel's column chunk (133 > 128), odd F, a crop ending at the skip map's edge."""
    require(backend, device)
    n, c, f = 2, 5, 13
    x = randn(n, c, 4, 67, dtype=dtype, seed=30)
    weight = make_weight(wkind, c, 4, dtype)
    feats = randn(n, f, 11, 137, dtype=dtype, seed=31, scale=100.0).contiguous(
        memory_format=torch.channels_last)
    assert not feats.is_contiguous()
    kw = dict(offset=(1, 2), size=(8, 133), skip_offset=(3, 4), skip_weight=randn(c, f, seed=32),
              skip_bias=randn(c, seed=33), skip_scale=0.01)
    y = check(x, weight, 2, feats, backend, device, **kw)
    planes = run(x, weight, 2, feats.contiguous(), backend, device, **kw)
    assert torch.equal(y, planes)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_mixed_parameter_dtypes(backend, device, poisoned):
    """Skip weight/bias in another dtype than the features: both read and accumulated in fp32."""
    require(backend, device)
    x = randn(1, 4, 5, 5, dtype=torch.float16, seed=14)
    weight = learned_weight(4, 4, torch.bfloat16)
    feats = randn(1, 6, 12, 12, dtype=torch.float16, seed=15)
    check(x, weight, 2, feats, backend, device, skip_weight=randn(4, 6, seed=16),
          skip_bias=randn(4, dtype=torch.bfloat16, seed=17), skip_offset=0)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_empty_batch(backend, device, poisoned):
    require(backend, device)
    x = torch.zeros(0, 3, 4, 5, device=device)
    skip = torch.zeros(0, 3, 10, 12, device=device)
    y = ops.upsample_crop_add(x, bilinear_weight(3, 3, 4).to(device), 2, skip, backend=backend)
    assert tuple(y.shape) == (0, 3, 10, 12) and y.dtype == x.dtype


# --- the FCN-8s head, as the net runs it --------------------------------------------------------

@pytest.mark.parametrize("backend,device", BACKENDS)
def test_fcn8s_at_once_head(backend, device, poisoned):
    """score_fr 5×6 → upscore2 (learned 4/2) + score_pool4 (pool4 features, F=512, ×0.01, crop 5)
    → upscore_pool4 (learned 4/2) + score_pool3 (F=256, ×0.0001, crop 9) → upscore8 (bilinear
    16/8, crop 31 to the image). Each stage against the reference, and the chain end to end."""
    require(backend, device)
    c = 21
    score_fr = randn(1, c, 5, 6, seed=20)
    pool4 = randn(1, 512, 22, 24, seed=21, scale=100.0).relu()
    pool3 = randn(1, 256, 44, 48, seed=22, scale=1000.0).relu()
    upscore2, upscore_pool4 = learned_weight(c, 4, seed=23), learned_weight(c, 4, seed=24)
    upscore8 = bilinear_weight(c, c, 16)
    p4 = dict(skip_weight=randn(c, 512, 1, 1, seed=25, scale=0.05), skip_bias=randn(c, seed=26),
              skip_scale=0.01, skip_offset=5)
    p3 = dict(skip_weight=randn(c, 256, 1, 1, seed=27, scale=0.05), skip_bias=randn(c, seed=28),
              skip_scale=0.0001, skip_offset=9)
    image = (180, 210)

    fuse_pool4 = check(score_fr, upscore2, 2, pool4, backend, device, **p4)
    assert tuple(fuse_pool4.shape) == (1, c, 12, 14)
    fuse_pool3 = check(fuse_pool4.cpu(), upscore_pool4, 2, pool3, backend, device, **p3)
    assert tuple(fuse_pool3.shape) == (1, c, 26, 30)
    out = check(fuse_pool3.cpu(), upscore8, 8, None, backend, device, offset=31, size=image)

    ref = reference(score_fr, upscore2, 2, pool4, **p4)
    ref = reference(ref, upscore_pool4, 2, pool3, **p3)
    ref = reference(ref, upscore8, 8, offset=31, size=image)
    assert_rel_close(out, ref, 10 * TOLERANCE[torch.float32], "FCN-8s head end to end")


# --- errors -------------------------------------------------------------------------------------

def _ok(device):
    """Valid arguments: x (2, 3, 4, 5) with a 4/2 bilinear weight → full map (10, 12)."""
    return dict(x=randn(2, 3, 4, 5).to(device), weight=bilinear_weight(3, 3, 4).to(device),
                stride=2, skip=randn(2, 3, 10, 12).to(device))


ERRORS = [
    ("x-3d", dict(x=lambda d: torch.zeros(3, 4, 5, device=d)), ValueError, "x must be 4-D"),
    ("x-float64", dict(x=lambda d: torch.zeros(2, 3, 4, 5, dtype=torch.float64, device=d)),
     TypeError, "x must be one of"),
    ("x-int", dict(x=lambda d: torch.zeros(2, 3, 4, 5, dtype=torch.int32, device=d)),
     TypeError, "x must be one of"),
    ("x-no-pixels", dict(x=lambda d: torch.zeros(2, 3, 0, 5, device=d)), ValueError,
     "at least one class and one pixel"),
    ("weight-float64", dict(weight=lambda d: torch.zeros(3, 3, 4, 4, dtype=torch.float64,
                                                         device=d)), TypeError,
     "weight must be one of"),
    ("weight-c-mismatch", dict(weight=lambda d: bilinear_weight(4, 4, 4).to(d)), ValueError,
     r"weight must be \(C, C, k, k\) with C = 3"),
    ("weight-not-square", dict(weight=lambda d: torch.zeros(3, 3, 4, 3, device=d)), ValueError,
     r"weight must be \(C, C, k, k\)"),
    ("k>2s", dict(weight=lambda d: bilinear_weight(3, 3, 5).to(d)), ValueError,
     r"k <= 2\*stride"),
    ("stride-0", dict(stride=0), ValueError, "stride must be a positive int"),
    ("crop-too-large", dict(size=(11, 12), skip=None), ValueError, "exceeds the map"),
    ("crop-past-edge", dict(offset=(0, 1), size=(10, 12), skip=None), ValueError,
     "exceeds the map"),
    ("negative-offset", dict(offset=(-1, 0), size=(4, 4), skip=None), ValueError,
     "offset must be >= 0"),
    ("size-zero", dict(size=(0, 4)), ValueError, "size must be positive"),
    ("offset-not-int", dict(offset=1.5), TypeError, "offset must be an int or a pair"),
    ("skip-batch", dict(skip=lambda d: torch.zeros(1, 3, 10, 12, device=d)), ValueError,
     "skip has batch 1 but x has 2"),
    ("skip-channels", dict(skip=lambda d: torch.zeros(2, 4, 10, 12, device=d)), ValueError,
     "skip scores must have C = 3"),
    ("skip-float64", dict(skip=lambda d: torch.zeros(2, 3, 10, 12, dtype=torch.float64,
                                                     device=d)), TypeError, "skip must be one of"),
    ("skip-3d", dict(skip=lambda d: torch.zeros(3, 10, 12, device=d)), ValueError,
     "skip must be 4-D"),
    ("skip-crop-too-large", dict(skip=lambda d: torch.zeros(2, 3, 10, 12, device=d),
                                 skip_offset=(0, 1)), ValueError, "skip: crop window"),
    ("skip-negative-offset", dict(skip_offset=-1), ValueError, "skip: offset must be >= 0"),
    ("skip-weight-shape", dict(skip=lambda d: torch.zeros(2, 8, 10, 12, device=d),
                               skip_weight=lambda d: torch.zeros(3, 7, device=d)), ValueError,
     r"skip_weight must be \(C, F\) = \(3, 8\)"),
    ("skip-weight-4d-not-1x1", dict(skip=lambda d: torch.zeros(2, 8, 10, 12, device=d),
                                    skip_weight=lambda d: torch.zeros(3, 8, 3, 3, device=d)),
     ValueError, r"skip_weight must be \(C, F\)"),
    ("skip-weight-int", dict(skip=lambda d: torch.zeros(2, 8, 10, 12, device=d),
                             skip_weight=lambda d: torch.zeros(3, 8, dtype=torch.int64, device=d)),
     TypeError, "skip_weight must be one of"),
    ("skip-weight-not-tensor", dict(skip=lambda d: torch.zeros(2, 8, 10, 12, device=d),
                                    skip_weight=[[0.0] * 8] * 3), TypeError,
     "skip_weight must be a torch.Tensor"),
    ("skip-bias-shape", dict(skip=lambda d: torch.zeros(2, 8, 10, 12, device=d),
                             skip_weight=lambda d: torch.zeros(3, 8, device=d),
                             skip_bias=lambda d: torch.zeros(4, device=d)), ValueError,
     "skip_bias must have 3 values"),
    ("skip-bias-without-weight", dict(skip_bias=lambda d: torch.zeros(3, device=d)), ValueError,
     "skip_bias needs skip_weight"),
    ("skip-weight-without-skip", dict(skip=None, skip_weight=lambda d: torch.zeros(3, 3, device=d)),
     ValueError, "skip_weight/skip_bias given without skip features"),
    ("skip-scale-nan", dict(skip_scale=float("nan")), ValueError, "skip_scale must be a finite"),
    ("skip-scale-inf", dict(skip_scale=float("inf")), ValueError, "skip_scale must be a finite"),
    ("skip-scale-str", dict(skip_scale="0.01"), ValueError, "skip_scale must be a finite"),
    ("skip-scale-bool", dict(skip_scale=True), ValueError, "skip_scale must be a finite"),
    ("skip-scale-tensor", dict(skip_scale=lambda d: torch.tensor(0.01, device=d)), ValueError,
     "skip_scale must be a finite"),
    ("weight-other-device", dict(weight=lambda d: torch.zeros(3, 3, 4, 4, device="meta")),
     ValueError, "weight is on meta but x is on"),
    ("skip-other-device", dict(skip=lambda d: torch.zeros(2, 3, 10, 12, device="meta")),
     ValueError, "skip is on meta but x is on"),
    ("skip-weight-other-device", dict(skip=lambda d: torch.zeros(2, 8, 10, 12, device=d),
                                      skip_weight=lambda d: torch.zeros(3, 8, device="meta")),
     ValueError, "skip_weight is on meta"),
]


@pytest.mark.parametrize("name,change,exc,message", ERRORS, ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_errors(backend, device, name, change, exc, message, monkeypatch):
    require(backend, device)
    mod = importlib.import_module("fcnfast.kernels.upsample_crop_add")

    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError("kernel launched on bad input")

    monkeypatch.setattr(mod, "_upsample_crop_add_kernel", NoLaunch())
    args = _ok(device)
    for key, v in change.items():
        args[key] = v(device) if callable(v) else v
    x, weight, stride, skip = (args.pop(key) for key in ("x", "weight", "stride", "skip"))
    with pytest.raises(exc, match=message):
        ops.upsample_crop_add(x, weight, stride, skip, backend=backend, **args)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    """With TRITON_INTERPRET off, backend='triton' on CPU tensors raises, never falls back."""
    if fcnfast._ext._triton_import_error():
        pytest.skip(fcnfast._ext._triton_import_error())
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = fcnfast._ext.triton_status("cpu")
    assert not ok and "TRITON_INTERPRET" in why
    args = _ok("cpu")
    with pytest.raises(RuntimeError, match="backend 'triton' cannot run here.*TRITON_INTERPRET"):
        ops.upsample_crop_add(args["x"], args["weight"], 2, args["skip"], backend="triton")

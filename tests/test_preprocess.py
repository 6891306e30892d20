"""Op 4, preprocess: every kernel backend against the reference (head-ops.md)."""
import pytest
import torch

import fcnfast.ops as ops
from fcnfast import contract

from op_testing import DTYPES, TOLERANCE, assert_rel_close, kernel_backend_params, poisoned, require  # noqa: F401 (poisoned: a fixture)

CAFFE = dict(mean=(104.00698793, 116.66876762, 122.67891434), scale=1.0, bgr=True)
TORCHVISION = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255, bgr=False)
CONVENTIONS = {"caffe": CAFFE, "torchvision": TORCHVISION}
# (N, H, W): a single pixel, primes, more pixels than one block (1024) but not a multiple of it.
SHAPES = [(1, 1, 1), (1, 2, 3), (3, 17, 29), (1, 37, 41), (2, 1, 1031)]

backends = pytest.mark.parametrize("backend,device", kernel_backend_params())


def _frames(shape, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, 3), dtype=torch.uint8, generator=g).to(device)


def _ulp(t: torch.Tensor) -> torch.Tensor:
    """Spacing of ``t``'s dtype at each value of ``t`` (as float64)."""
    a = t.abs()
    return (torch.nextafter(a, torch.full_like(a, float("inf"))) - a).double()


def _check(y, frames, dtype, channels_last, **conv):
    n, h, w, _ = frames.shape
    assert y.shape == (n, 3, h, w) and y.dtype == dtype and y.device == frames.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt), f"not {fmt}: strides {y.stride()}"
    ref64 = ops.preprocess(frames, dtype=torch.float64, backend="torch", **conv)
    assert_rel_close(y, ref64, TOLERANCE[dtype])
    # Against the reference in the same dtype: float32 exact or 1 ulp (same operation order); the
    # low-precision dtypes within 1 ulp of the dtype (Triton's interpreter truncates to bfloat16
    # where the GPU and torch round to nearest).
    ref = ops.preprocess(frames, dtype=dtype, channels_last=channels_last, backend="torch", **conv)
    diff = (y.double() - ref.double()).abs()
    bad = diff > _ulp(ref)
    assert not bad.any(), (f"{int(bad.sum())} values more than 1 ulp from the reference, max |diff| "
                           f"{float(diff.max()):.3g} at {tuple(bad.nonzero()[0].tolist())}")


@backends
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("convention", list(CONVENTIONS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.usefixtures("poisoned")
def test_matches_reference(backend, device, shape, dtype, convention, channels_last):
    require(backend, device)
    frames = _frames(shape, device)
    conv = CONVENTIONS[convention]
    y = ops.preprocess(frames, dtype=dtype, channels_last=channels_last, backend=backend, **conv)
    _check(y, frames, dtype, channels_last, **conv)


@backends
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("convention", list(CONVENTIONS))
@pytest.mark.usefixtures("poisoned")
def test_every_byte_value_float32(backend, device, convention, channels_last):
    """All 256 values in every channel, float32: exact up to 1 ulp (catches an FMA or an
    approximate divide, which differ from the reference by more on some values)."""
    require(backend, device)
    v = torch.arange(256, dtype=torch.uint8)
    frames = torch.stack([v, v.flip(0), v.roll(85)], dim=-1).reshape(2, 8, 16, 3).to(device)
    conv = CONVENTIONS[convention]
    y = ops.preprocess(frames, channels_last=channels_last, backend=backend, **conv)
    _check(y, frames, torch.float32, channels_last, **conv)


@backends
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_channel_order_and_values(backend, device, channels_last):
    """Independent of the reference: BGR puts blue first, and mean/std are in output order."""
    require(backend, device)
    frames = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 1, 1, 3).repeat(1, 2, 3, 1).to(device)
    y = ops.preprocess(frames, mean=(1, 2, 3), std=(2, 4, 8), bgr=True, channels_last=channels_last,
                       backend=backend)
    want = torch.tensor([(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8]).view(1, 3, 1, 1).expand(1, 3, 2, 3)
    torch.testing.assert_close(y.cpu(), want, rtol=0, atol=0)
    y = ops.preprocess(frames, mean=0.5, scale=2.0, channels_last=channels_last, backend=backend)
    want = torch.tensor([19.5, 39.5, 59.5]).view(1, 3, 1, 1).expand(1, 3, 2, 3)
    torch.testing.assert_close(y.cpu(), want, rtol=0, atol=0)


def _views(device):
    base = _frames((4, 23, 31), device, seed=1)
    rgba = torch.randint(0, 256, (2, 19, 13, 4), dtype=torch.uint8).to(device)
    return {
        "strided": base[:, 1::2, ::3],
        "batch-step": base[::2],
        "transposed": base.transpose(1, 2),
        "rgba-slice": rgba[..., :3],
        "channel-reversed": base.flip(-1)[:, :, 2:-1],
    }


@backends
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("view", ["strided", "batch-step", "transposed", "rgba-slice",
                                  "channel-reversed"])
@pytest.mark.usefixtures("poisoned")
def test_noncontiguous_frames(backend, device, view, channels_last):
    require(backend, device)
    frames = _views(device)[view]
    y = ops.preprocess(frames, dtype=torch.float16, channels_last=channels_last, backend=backend, **CAFFE)
    _check(y, frames, torch.float16, channels_last, **CAFFE)


@backends
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_empty_batch(backend, device, channels_last):
    require(backend, device)
    frames = torch.zeros(0, 5, 7, 3, dtype=torch.uint8, device=device)
    y = ops.preprocess(frames, channels_last=channels_last, backend=backend, **CAFFE)
    assert y.shape == (0, 3, 5, 7) and y.dtype == torch.float32


@backends
@pytest.mark.parametrize("args,kwargs,exc,msg", [
    ("float-frames", {}, TypeError, "frames must be uint8"),
    ("3-d", {}, ValueError, "frames must be 4-D"),
    ("4-channels", {}, ValueError, r"frames must be \(N, H, W, 3\) RGB"),
    ("ok", {"std": (1.0, 0.0, 1.0)}, ValueError, "std must not contain 0"),
    ("ok", {"dtype": torch.float64}, TypeError, "dtype must be one of"),
    ("ok", {"mean": (0.0, float("nan"), 0.0)}, ValueError, "mean must be 3 finite numbers"),
    ("ok", {"mean": (1.0, 2.0)}, ValueError, "mean must be 3 finite numbers"),
    ("ok", {"scale": (1.0, 2.0)}, TypeError, "scale must be one number"),
    ("not-a-tensor", {}, TypeError, "expected a torch.Tensor"),
])
def test_errors(backend, device, args, kwargs, exc, msg):
    require(backend, device)
    frames = {
        "ok": torch.zeros(1, 4, 4, 3, dtype=torch.uint8),
        "float-frames": torch.zeros(1, 4, 4, 3),
        "3-d": torch.zeros(4, 4, 3, dtype=torch.uint8),
        "4-channels": torch.zeros(1, 4, 4, 4, dtype=torch.uint8),
        "not-a-tensor": [[[[0, 0, 0]]]],
    }[args]
    if isinstance(frames, torch.Tensor):
        frames = frames.to(device)
    kw = dict(mean=(0.0, 0.0, 0.0))
    kw.update(kwargs)
    with pytest.raises(exc, match=msg):
        ops.preprocess(frames, backend=backend, **kw)


def test_reference_accepts_float64():
    """float64 is the reference's ground truth, refused only by kernel backends (above)."""
    frames = _frames((1, 3, 5), "cpu")
    y = ops.preprocess(frames, dtype=torch.float64, backend="torch", **TORCHVISION)
    assert y.dtype == torch.float64

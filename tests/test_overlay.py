"""Op 5, overlay: every kernel backend against the reference (head-ops.md)."""
import pytest
import torch

import fcnfast.ops as ops
from fcnfast import contract
from fcnfast.palette import voc_palette

from op_testing import kernel_backend_params, poisoned, require  # noqa: F401 (poisoned: a fixture)

SHAPES = [(1, 1, 1), (3, 17, 29), (1, 37, 41)]
LABEL_DTYPES = [torch.uint8, torch.int32, torch.int64]

backends = pytest.mark.parametrize("backend,device", kernel_backend_params())


def _inputs(shape, colours, label_dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (*shape, 3), dtype=torch.uint8, generator=g)
    top = min(colours, 256) if label_dtype == torch.uint8 else colours
    labels = torch.randint(0, top, shape, generator=g).to(label_dtype)
    palette = torch.from_numpy(voc_palette(colours))
    return frames.to(device), labels.to(device), palette.to(device)


def assert_overlay_equal(y, frames, labels, palette, alpha):
    """Equal to the reference, except ±1 where the exact blend lies within 1e-4 of a .5 boundary
    (the one place a fused multiply-add on a GPU could round the other way)."""
    ref = ops.overlay(frames, labels, palette, alpha, backend="torch")
    assert y.shape == ref.shape and y.dtype == torch.uint8 and y.device == frames.device
    y, ref = y.cpu().int(), ref.cpu().int()
    exact = frames.cpu().double() * (1 - alpha) + palette.cpu()[labels.cpu().long()].double() * alpha
    near_half = ((exact - exact.floor()) - 0.5).abs() < 1e-4
    diff = (y - ref).abs()
    bad = (diff > 1) | ((diff == 1) & ~near_half)
    assert not bad.any(), (f"{int(bad.sum())} of {bad.numel()} values differ, first at "
                           f"{tuple(bad.nonzero()[0].tolist())}: got {int(y[bad][0])}, "
                           f"want {int(ref[bad][0])}")


@backends
@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5, 0.3])
@pytest.mark.parametrize("colours", [21, 300])
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.usefixtures("poisoned")
def test_matches_reference(backend, device, shape, label_dtype, colours, alpha):
    require(backend, device)
    frames, labels, palette = _inputs(shape, colours, label_dtype, device)
    y = ops.overlay(frames, labels, palette, alpha, backend=backend)
    assert_overlay_equal(y, frames, labels, palette, alpha)


@backends
def test_alpha_extremes_are_exact(backend, device):
    """alpha 0 gives the frame, alpha 1 the palette colours (independent of the reference)."""
    require(backend, device)
    frames, labels, palette = _inputs((2, 9, 11), 21, torch.int64, device)
    assert torch.equal(ops.overlay(frames, labels, palette, 0.0, backend=backend), frames)
    assert torch.equal(ops.overlay(frames, labels, palette, 1, backend=backend), palette[labels])


@backends
@pytest.mark.usefixtures("poisoned")
def test_every_value_pair(backend, device):
    """Every (frame byte, palette byte) pair, at alphas with many .5 ties in float32."""
    require(backend, device)
    palette = torch.arange(256, dtype=torch.uint8).view(256, 1).repeat(1, 3)
    palette[:, 1] = palette[:, 1].flip(0)
    frames = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, 256, 256, 3).contiguous()
    labels = torch.arange(256, dtype=torch.int32).view(1, 256, 1).expand(1, 256, 256).contiguous()
    frames, labels, palette = frames.to(device), labels.to(device), palette.to(device)
    for alpha in (0.5, 0.25, 0.3, 0.7):
        y = ops.overlay(frames, labels, palette, alpha, backend=backend)
        assert_overlay_equal(y, frames, labels, palette, alpha)


@backends
@pytest.mark.usefixtures("poisoned")
def test_noncontiguous_inputs(backend, device):
    require(backend, device)
    frames, labels, palette = _inputs((4, 20, 30), 21, torch.int32, device)
    frames, labels = frames[::2, 1:, ::3], labels[::2, 1:, ::3]
    big = torch.zeros(21, 5, dtype=torch.uint8, device=device)
    big[:, 1:4] = palette
    y = ops.overlay(frames.transpose(1, 2), labels.transpose(1, 2), big[:, 1:4], 0.4, backend=backend)
    assert_overlay_equal(y, frames.transpose(1, 2), labels.transpose(1, 2), palette, 0.4)


@backends
def test_empty_batch(backend, device):
    require(backend, device)
    frames, labels, palette = _inputs((0, 3, 4), 21, torch.uint8, device)
    y = ops.overlay(frames, labels, palette, backend=backend)
    assert y.shape == (0, 3, 4, 3) and y.dtype == torch.uint8


@backends
@pytest.mark.parametrize("case,exc,msg", [
    ("label-too-big", ValueError, r"labels must lie in \[0, 20\].*found \[0, 21\]"),
    ("label-negative", ValueError, r"labels must lie in \[0, 20\].*found \[-1,"),
    ("uint8-label-too-big", ValueError, r"labels must lie in \[0, 20\]"),
    ("shape-mismatch", ValueError, "must match frames"),
    ("labels-float", TypeError, "labels must be uint8, int32 or int64"),
    ("labels-4d", ValueError, "labels must be 3-D"),
    ("palette-int32", ValueError, r"palette must be \(C, 3\) uint8"),
    ("palette-rgba", ValueError, r"palette must be \(C, 3\) uint8"),
    ("frames-float", TypeError, "frames must be uint8"),
    ("alpha", ValueError, r"alpha must be a number in \[0, 1\]"),
])
def test_errors(backend, device, case, exc, msg):
    require(backend, device)
    frames, labels, palette = _inputs((2, 5, 6), 21, torch.int64, device)
    alpha = 0.5
    if case == "label-too-big":
        labels[1, 2, 3] = 21
        labels[0, 0, 0] = 0
    elif case == "label-negative":
        labels[0, 4, 5] = -1
    elif case == "uint8-label-too-big":
        labels = labels.to(torch.uint8)
        labels[0, 1, 1] = 255
    elif case == "shape-mismatch":
        labels = labels[:, :, :5]
    elif case == "labels-float":
        labels = labels.float()
    elif case == "labels-4d":
        labels = labels[None]
    elif case == "palette-int32":
        palette = palette.int()
    elif case == "palette-rgba":
        palette = torch.cat([palette, palette[:, :1]], 1)
    elif case == "frames-float":
        frames = frames.float()
    elif case == "alpha":
        alpha = 1.5
    with pytest.raises(exc, match=msg):
        ops.overlay(frames, labels, palette, alpha, backend=backend)



def _no_reduction(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the label-range check ran")
    monkeypatch.setattr(torch, "aminmax", refuse)


@backends
@pytest.mark.usefixtures("poisoned")
def test_unchecked_labels_skip_the_range_check_with_the_same_output(backend, device, monkeypatch):
    """check_labels=False (labels vouched in range: the engine's own argmax) gives the checked
    output without the reduction."""
    require(backend, device)
    frames, labels, palette = _inputs((2, 13, 7), 21, torch.int32, device, seed=3)
    checked = ops.overlay(frames, labels, palette, 0.4, backend=backend)
    _no_reduction(monkeypatch)
    with pytest.raises(AssertionError, match="range check ran"):
        ops.overlay(frames, labels, palette, 0.4, backend=backend)
    assert torch.equal(ops.overlay(frames, labels, palette, 0.4, backend=backend, check_labels=False),
                       checked)


def test_overlay_labels_skips_the_check_only_for_a_models_own_classes(monkeypatch):
    """render.overlay_labels trusts labels only when told they are a model's argmax over classes
    the palette covers; otherwise a label past the palette is still refused."""
    from fcnfast.render import overlay_labels

    frames, labels, palette = _inputs((1, 9, 11), 6, torch.int64, "cpu", seed=4)
    want = overlay_labels(frames, labels, palette.numpy(), 0.5)
    bad = labels.clone()
    bad[0, 0, 0] = 6
    for num_classes in (None, 7):  # not a model's labels / more classes than colours
        with pytest.raises(ValueError, match="palette"):
            overlay_labels(frames, bad, palette.numpy(), 0.5, num_classes=num_classes)
    _no_reduction(monkeypatch)
    assert torch.equal(overlay_labels(frames, labels, palette.numpy(), 0.5, num_classes=6), want)

"""VGG16 FCN-32s/16s/8s/at-once: computed crops, pytorch-fcn compatibility, shapes."""
from fractions import Fraction

import pytest
import torch
from torch import nn

from fcnfast.models import ARCHS, GeometryError, build_model, crop_offset, layer_map
from fcnfast.models.geometry import CoordMap, chain_map

VGG = ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"]

# pytorch-fcn's state-dict keys (torchfcn/models/fcn*.py), weight + bias per conv.
_TRUNK = [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
_TRUNK += ["fc6", "fc7", "score_fr"]
TORCHFCN_KEYS = {
    "fcn32s": _TRUNK + ["upscore"],
    "fcn16s": _TRUNK + ["score_pool4", "upscore2", "upscore16"],
    "fcn8s": _TRUNK + ["score_pool3", "score_pool4", "upscore2", "upscore8", "upscore_pool4"],
}
TORCHFCN_KEYS["fcn8s_atonce"] = TORCHFCN_KEYS["fcn8s"]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    out = {}
    for arch in VGG:  # narrow: the geometry and the forward are the full nets', at a fraction of the cost
        m = build_model(arch, 5, widths=(8, 8, 16, 16, 16), fc_width=32).eval()
        with torch.no_grad():  # random heads so the outputs are informative
            for p in m.parameters():
                if p.shape[0] == 5 or p.dim() == 4 and p.shape[1] == 5:
                    p.normal_(0, 0.05)
        out[arch] = m
    return out


def test_crops_computed_from_geometry(models):
    assert models["fcn32s"].crop_offsets == {"upscore": 19}
    assert models["fcn16s"].crop_offsets == {"score_pool4": 5, "upscore16": 27}
    assert models["fcn8s"].crop_offsets == {"score_pool4": 5, "score_pool3": 9, "upscore8": 31}
    assert models["fcn8s_atonce"].crop_offsets == models["fcn8s"].crop_offsets


def test_crops_follow_the_layers():
    # Change the geometry and the offset moves with it: conv1_1 pad 100 → 104 shifts every map by 4.
    m = build_model("fcn32s", 2)
    m.conv1_1.padding = (104, 104)
    up = m.map_of("score_fr").then(layer_map(m.upscore))
    assert crop_offset(up, CoordMap(), "upscore") == 23


def test_state_dict_keys_are_pytorch_fcn(models):
    for arch, m in models.items():
        want = {f"{n}.weight" for n in TORCHFCN_KEYS[arch]}
        want |= {f"{n}.bias" for n in TORCHFCN_KEYS[arch] if not n.startswith("upscore")}
        assert set(m.state_dict()) == want, arch


def test_caffe_geometry(models):
    m = models["fcn8s"]
    assert m.conv1_1.padding == (100, 100) and m.conv1_2.padding == (1, 1)
    assert all(getattr(m, f"pool{i}").ceil_mode for i in range(1, 6))
    assert m.fc6.kernel_size == (7, 7) and m.fc6.padding == (0, 0)
    assert m.upscore8.kernel_size == (16, 16) and m.upscore8.stride == (8, 8)


def torchfcn_forward(m, x):
    """pytorch-fcn's forward with its literal offsets, on our layers."""
    pool3, pool4, h = m.trunk(x)
    H, W = x.shape[-2:]
    if m.arch == "fcn32s":
        return m.upscore(h)[:, :, 19:19 + H, 19:19 + W]
    up2 = m.upscore2(h)
    if m.arch == "fcn16s":
        s4 = m.score_pool4(pool4)[:, :, 5:5 + up2.shape[2], 5:5 + up2.shape[3]]
        return m.upscore16(up2 + s4)[:, :, 27:27 + H, 27:27 + W]
    k4, k3 = (0.01, 0.0001) if m.arch == "fcn8s_atonce" else (1, 1)
    s4 = m.score_pool4(pool4 * k4)[:, :, 5:5 + up2.shape[2], 5:5 + up2.shape[3]]
    h = m.upscore_pool4(up2 + s4)
    s3 = m.score_pool3(pool3 * k3)[:, :, 9:9 + h.shape[2], 9:9 + h.shape[3]]
    return m.upscore8(h + s3)[:, :, 31:31 + H, 31:31 + W]


@pytest.mark.parametrize("arch", VGG)
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (97, 131)])
def test_forward_matches_pytorch_fcn(models, arch, size):
    x = torch.randn(2 if size == (2, 3) else 1, 3, *size) * 50
    with torch.no_grad():
        y = models[arch](x)
        want = torchfcn_forward(models[arch], x)
    assert y.shape == (x.shape[0], 5, *size)
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    assert y.abs().max() > 0


def test_atonce_scales_pool_features(models):
    a, b = models["fcn8s"], models["fcn8s_atonce"]
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 40, 40) * 50
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


@pytest.mark.parametrize("arch", VGG)
def test_every_size_is_covered(arch):
    """Output is exactly the input size for every side 1..600 (meta device: shapes only)."""
    m = build_model(arch, 3).to("meta").eval()
    sides = list(range(1, 40)) + list(range(40, 601, 37)) + [500, 599, 600]
    with torch.no_grad():
        for s in sides:
            assert m(torch.empty(1, 3, s, 600 - s + 1, device="meta")).shape == (1, 3, s, 601 - s)


@pytest.mark.parametrize("arch", VGG)
def test_500x500_and_batch_shape(arch):
    m = build_model(arch, 21).to("meta").eval()
    with torch.no_grad():
        assert m(torch.empty(2, 3, 500, 500, device="meta")).shape == (2, 21, 500, 500)


def test_geometry_maps_and_errors():
    conv = layer_map(nn.Conv2d(3, 3, 3, padding=100))
    assert conv == CoordMap(Fraction(1), Fraction(99))
    pool = layer_map(nn.MaxPool2d(2, 2, ceil_mode=True))
    assert pool == CoordMap(Fraction(1, 2), Fraction(-1, 4))
    deconv = layer_map(nn.ConvTranspose2d(2, 2, 64, stride=32))
    assert deconv == CoordMap(Fraction(32), Fraction(63, 2))
    dil = layer_map(nn.Conv2d(1, 1, 3, padding=2, dilation=2))
    assert dil == CoordMap()
    assert chain_map([nn.ReLU(), nn.Dropout2d(), nn.Identity()]) == CoordMap()
    with pytest.raises(GeometryError, match="scale mismatch"):
        crop_offset(CoordMap(Fraction(1, 2)), CoordMap())
    with pytest.raises(GeometryError, match="non-integer"):
        crop_offset(CoordMap(b=Fraction(3, 2)), CoordMap())
    with pytest.raises(GeometryError, match="negative"):
        crop_offset(CoordMap(b=Fraction(-2)), CoordMap())
    with pytest.raises(GeometryError, match="equal kernel_size"):
        layer_map(nn.Conv2d(1, 1, (3, 5)))
    with pytest.raises(GeometryError, match="no coordinate map"):
        layer_map(nn.LSTM(2, 2))


def test_build_model_rejects_unknown():
    with pytest.raises(ValueError, match="unknown architecture 'fcn4s'.*fcn32s"):
        build_model("fcn4s")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("fcn32s", 0)
    assert set(ARCHS) >= set(VGG)

"""FCN-AlexNet and FCN-GoogLeNet: Caffe geometry, crops, coverage, names, init."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnfast.convention import CAFFE_BGR
from fcnfast.models import ARCHS, GeometryError, build_model, crop_offset, layer_map
from fcnfast.models.alexnet import FCNAlexNet
from fcnfast.models.geometry import IDENTITY
from fcnfast.models.googlenet import FCNGoogLeNet, Inception
from fcnfast.models.init import bilinear_weight

C = 5  # a class count that is not 21, so nothing silently assumes VOC
# voc-fcn-alexnet/val.prototxt crops upscore at 18; GoogLeNet's value follows from its layers.
ALEXNET_OFFSET = 18
GOOGLENET_OFFSET = 98

# Hand-written Caffe geometry, (kind, kernel, stride, pad), independent of the model code.
_ALEX_LAYERS = [("conv", 11, 4, 100), ("pool", 3, 2, 0), ("conv", 5, 1, 2), ("pool", 3, 2, 0),
                ("conv", 3, 1, 1), ("conv", 3, 1, 1), ("conv", 3, 1, 1), ("pool", 3, 2, 0),
                ("conv", 6, 1, 0), ("conv", 1, 1, 0), ("conv", 1, 1, 0)]
# Inception blocks keep the size; only the strided layers and the 1x1/3x3 convs of conv2 matter.
_GOOG_LAYERS = [("conv", 7, 2, 100), ("pool", 3, 2, 0), ("conv", 1, 1, 0), ("conv", 3, 1, 1),
                ("pool", 3, 2, 0), ("pool", 3, 2, 0), ("pool", 3, 2, 0), ("conv", 1, 1, 0)]
_LAYERS = {"fcn_alexnet": _ALEX_LAYERS, "fcn_googlenet": _GOOG_LAYERS}
_OFFSETS = {"fcn_alexnet": ALEXNET_OFFSET, "fcn_googlenet": GOOGLENET_OFFSET}


def _caffe_upscore_size(arch, n):
    """Caffe's output size of upscore for an input side n (conv floors, pool ceils and clips)."""
    for kind, k, s, p in _LAYERS[arch]:
        if kind == "conv":
            n = (n + 2 * p - k) // s + 1
        else:
            out = math.ceil((n + 2 * p - k) / s) + 1
            n = out - 1 if (out - 1) * s >= n + p else out  # the last window must start inside
        if n < 1:
            return 0
    return (n - 1) * 32 + 63


def _meta_model(cls):
    return cls(num_classes=C).to("meta").eval()


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return FCNAlexNet(num_classes=C).eval()


@pytest.fixture(scope="module")
def googlenet():
    torch.manual_seed(0)
    return FCNGoogLeNet(num_classes=C).eval()


@pytest.fixture(scope="module")
def models(alexnet, googlenet):
    return {"fcn_alexnet": alexnet, "fcn_googlenet": googlenet}


@pytest.fixture(scope="module")
def meta_models():
    return {"fcn_alexnet": _meta_model(FCNAlexNet), "fcn_googlenet": _meta_model(FCNGoogLeNet)}


ARCH_NAMES = ["fcn_alexnet", "fcn_googlenet"]


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_registered(arch):
    m = build_model(arch, num_classes=3)
    assert type(m) is ARCHS[arch] and m.arch == arch
    assert m.num_classes == 3 and m.input_convention == CAFFE_BGR


def test_offsets():
    assert FCNAlexNet().crop_offsets == {"upscore": ALEXNET_OFFSET}
    off = FCNGoogLeNet().crop_offsets["upscore"]
    assert isinstance(off, int) and off >= 0
    assert off == GOOGLENET_OFFSET
    # The offset is a property of the layers: independent of the class count (and of the input).
    assert FCNGoogLeNet(num_classes=2).crop_offsets["upscore"] == off


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_even_kernel_would_need_half_pixel_crop(models, arch):
    # Why upscore is 63/32: after the 3x3/2 pools, a 64/32 deconvolution lands half a pixel off.
    m = models[arch]
    up64 = m.map_of("score_fr").then(layer_map(nn.ConvTranspose2d(C, C, 64, stride=32)))
    with pytest.raises(GeometryError, match="non-integer"):
        crop_offset(up64, IDENTITY)


@pytest.mark.parametrize("arch", ARCH_NAMES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 3), (1, 5, 9)])
def test_output_shape_cpu(models, arch, shape):
    n, h, w = shape
    with torch.no_grad():
        out = models[arch](torch.randn(n, 3, h, w))
    assert out.shape == (n, C, h, w)


@pytest.mark.parametrize("arch", ARCH_NAMES)
@pytest.mark.parametrize("shape", [(1, 97, 131), (1, 500, 500), (2, 97, 131), (2, 1, 600)])
def test_output_shape_meta(meta_models, arch, shape):
    n, h, w = shape
    out = meta_models[arch](torch.empty(n, 3, h, w, device="meta"))
    assert out.shape == (n, C, h, w)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_coverage_every_side_up_to_600(meta_models, arch):
    off = _OFFSETS[arch]
    short = [n for n in range(1, 601) if _caffe_upscore_size(arch, n) < off + n]
    assert not short, f"upscore too small to crop at {off} for input sides {short[:10]}..."
    # The hand-written Caffe sizes agree with torch's (ceil-mode pooling included), on meta.
    m = meta_models[arch]
    for h, w in [(1, 2), (31, 32), (33, 63), (64, 65), (97, 131), (224, 227), (511, 600)]:
        up = m.upscore(m.trunk(torch.empty(1, 3, h, w, device="meta")))
        assert tuple(up.shape[-2:]) == (_caffe_upscore_size(arch, h), _caffe_upscore_size(arch, w))


def test_alexnet_weights_and_keys(alexnet):
    sd = alexnet.state_dict()
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "score_fr"]
    assert set(sd) == {f"{n}.{p}" for n in layers for p in ("weight", "bias")} | {"upscore.weight"}
    shapes = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
              "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 256, 6, 6),
              "fc7": (4096, 4096, 1, 1), "score_fr": (C, 4096, 1, 1), "upscore": (C, C, 63, 63)}
    for name, shape in shapes.items():
        assert tuple(sd[f"{name}.weight"].shape) == shape, name
    assert (alexnet.conv2.groups, alexnet.conv4.groups, alexnet.conv5.groups) == (2, 2, 2)
    assert alexnet.conv1.stride == (4, 4) and alexnet.conv1.padding == (100, 100)


def _expected_googlenet_keys():
    keys = {"conv1.7x7_s2", "conv2.3x3_reduce", "conv2.3x3", "score_fr"}
    for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        keys |= {f"inception_{b}.{n}" for n in
                 ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")}
    return {f"{k}.{p}" for k in keys for p in ("weight", "bias")} | {"upscore.weight"}


def test_googlenet_weights_and_keys(googlenet):
    sd = googlenet.state_dict()
    assert set(sd) == _expected_googlenet_keys()
    shapes = {"conv1.7x7_s2": (64, 3, 7, 7), "conv2.3x3_reduce": (64, 64, 1, 1),
              "conv2.3x3": (192, 64, 3, 3), "inception_3a.1x1": (64, 192, 1, 1),
              "inception_3a.pool_proj": (32, 192, 1, 1), "inception_3b.1x1": (128, 256, 1, 1),
              "inception_4a.3x3": (208, 96, 3, 3), "inception_4e.5x5": (128, 32, 5, 5),
              "inception_5a.1x1": (256, 832, 1, 1), "inception_5b.5x5_reduce": (48, 832, 1, 1),
              "score_fr": (C, 1024, 1, 1), "upscore": (C, C, 63, 63)}
    for name, shape in shapes.items():
        assert tuple(sd[f"{name}.weight"].shape) == shape, name
    assert googlenet.conv1[0].stride == (2, 2) and googlenet.conv1[0].padding == (100, 100)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in googlenet.modules())
    pools = [m for m in googlenet.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4 + 9 and all(p.ceil_mode for p in pools)


def _lrn_ok(m):
    return (isinstance(m, nn.LocalResponseNorm) and m.size == 5 and m.alpha == 1e-4
            and m.beta == 0.75 and m.k == 1)


def test_lrn_placement(alexnet, googlenet):
    names = list(alexnet.trunk_chain)
    assert names[names.index("pool1") + 1] == "norm1" and names[names.index("pool2") + 1] == "norm2"
    assert _lrn_ok(alexnet.norm1) and _lrn_ok(alexnet.norm2)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in alexnet.modules()) == 2
    # bvlc_googlenet: pool1/3x3_s2 -> pool1/norm1; conv2/3x3 -> conv2/relu_3x3 -> conv2/norm2.
    assert list(googlenet.pool1._modules) == ["3x3_s2", "norm1"]
    assert list(googlenet.conv2._modules)[-3:] == ["3x3", "relu_3x3", "norm2"]
    assert _lrn_ok(googlenet.pool1.norm1) and _lrn_ok(googlenet.conv2.norm2)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in googlenet.modules()) == 2


def test_lrn_is_caffes():
    # Caffe ACROSS_CHANNELS: x / (k + alpha/n * sum of squares over n channels centred on c)^beta.
    x = torch.randn(2, 7, 3, 4, dtype=torch.float64) * 30
    sq = F.pad(x * x, (0, 0, 0, 0, 2, 2))
    s = sum(sq[:, i:i + 7] for i in range(5))
    ref = x / (1 + 1e-4 / 5 * s) ** 0.75
    torch.testing.assert_close(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)(x), ref)


def test_inception_coord_map_and_concat_order(googlenet):
    inc = googlenet.inception_3a
    assert inc.coord_map() == IDENTITY
    x = torch.randn(1, 192, 5, 6)
    with torch.no_grad():
        out = inc(x)
        branches = [F.relu(inc._modules["1x1"](x)),
                    F.relu(inc._modules["3x3"](F.relu(inc._modules["3x3_reduce"](x)))),
                    F.relu(inc._modules["5x5"](F.relu(inc._modules["5x5_reduce"](x)))),
                    F.relu(inc.pool_proj(F.max_pool2d(x, 3, 1, 1)))]
    torch.testing.assert_close(out, torch.cat(branches, 1))
    bad = Inception(8, 2, 2, 2, 2, 2, 2)
    bad._modules["3x3"].padding = (0, 0)
    with pytest.raises(GeometryError, match="3x3_reduce"):
        bad.coord_map()


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_head_init_and_manual_upscore(arch):
    torch.manual_seed(0)
    m = ARCHS[arch](num_classes=C).eval()
    assert torch.equal(m.upscore.weight, bilinear_weight(C, C, 63))
    x = torch.randn(2, 3, 13, 21) * 50
    with torch.no_grad():
        assert torch.count_nonzero(m(x)) == 0  # score_fr starts at zero
        m.score_fr.weight.normal_(0, 0.01)
        m.score_fr.bias.normal_(0, 1)
        out = m(x)
        h = m.trunk(x)
        up = F.conv_transpose2d(h, m.upscore.weight, stride=32)
        off = _OFFSETS[arch]
        ref = up[:, :, off:off + 13, off:off + 21]
    assert h.shape[:2] == (2, C)
    assert torch.count_nonzero(out) > 0
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_rejects_bad_class_count():
    for cls in (FCNAlexNet, FCNGoogLeNet):
        with pytest.raises(ValueError):
            cls(num_classes=0)


@pytest.mark.parametrize("arch", ["fcn_alexnet", "fcn_googlenet"])
def test_low_precision_runs_lrn_in_float32(arch):
    """CPU LRN has no bf16 kernel; the models still run in bf16 and stay close to float32."""
    m = build_model(arch, 3).eval()
    with torch.no_grad():
        m.score_fr.weight.normal_(0, 0.05)
        x = torch.randn(1, 3, 45, 53) * 50
        ref = m(x)
        low = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape
    err = (low.float() - ref).norm() / ref.norm()
    assert err < 5e-2, err

"""Net surgery: bilinear kernels, convolutionalised classifiers, staged transplant."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnfast import surgery
from fcnfast.models import FCN8s, FCN16s, FCN32s, FCNAlexNet
from fcnfast.surgery import (convolutionalize_alexnet, convolutionalize_vgg16, fcn_from_classifier,
                             transplant, upsample_filt)

_TV_TO_CAFFE = dict(zip((0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
                        ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2",
                         "conv3_3", "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2",
                         "conv5_3")))


def _caffe_names(tv_sd):
    out = {}
    for k, v in tv_sd.items():
        layer, i, p = k.split(".")
        if layer == "features":
            out[f"{_TV_TO_CAFFE[int(i)]}.{p}"] = v
        else:
            out[f"{ {'0': 'fc6', '3': 'fc7', '6': 'fc8'}[i]}.{p}"] = v
    return out


@pytest.fixture(scope="module")
def tv_vgg(torchvision):
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


# --- bilinear kernels ---------------------------------------------------------------------------

def test_upsample_filt_is_reexported():
    from fcnfast.models.init import upsample_filt as orig
    assert surgery.upsample_filt is orig


@pytest.mark.parametrize("k, row", [
    (1, [1.0]),
    (2, [0.5, 0.5]),
    (3, [0.5, 1.0, 0.5]),  # odd: factor 2, centre 1
    (4, [0.25, 0.75, 0.75, 0.25]),  # even: factor 2, centre 1.5
])
def test_upsample_filt_values(k, row):
    row = np.array(row)
    np.testing.assert_allclose(upsample_filt(k), np.outer(row, row), rtol=0, atol=1e-12)


def test_bilinear_weight_is_diagonal():
    w = surgery.bilinear_weight(3, 3, 4)
    filt = torch.from_numpy(upsample_filt(4)).float()
    for i in range(3):
        for j in range(3):
            torch.testing.assert_close(w[i, j], filt if i == j else torch.zeros(4, 4))


# --- VGG16 --------------------------------------------------------------------------------------

def test_vgg16_convolutionalised_computes_the_classifier(tv_vgg):
    conv = convolutionalize_vgg16(tv_vgg.state_dict(), keep_classifier=True)
    assert conv["fc6.weight"].shape == (4096, 512, 7, 7)
    assert conv["fc7.weight"].shape == (4096, 4096, 1, 1)
    assert conv["score_fr.weight"].shape == (1000, 4096, 1, 1)
    m = FCN32s(num_classes=21)
    # fc8 as a 1×1 conv: a 1000-class score_fr (an FCN32s(1000) would need a 4G-entry upscore).
    m.score_fr = nn.Conv2d(4096, 1000, 1)
    missing, unexpected = m.load_state_dict(conv, strict=False)
    assert not unexpected and missing == ["upscore.weight"]
    m.eval()
    # The classifier sees a 224×224 crop with pad 1; pad 100 is the FCN's own addition.
    m.conv1_1.padding = (1, 1)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = tv_vgg(x)
        _, _, scores = m.trunk(x)
    assert scores.shape == (1, 1000, 1, 1)
    torch.testing.assert_close(scores.flatten(1), ref, rtol=1e-4,
                               atol=1e-4 * ref.abs().max().item())


def test_vgg16_caffe_layout_gives_same_tensors(tv_vgg):
    tv_sd = tv_vgg.state_dict()
    a = convolutionalize_vgg16(tv_sd, keep_classifier=True)
    caffe = _caffe_names(tv_sd)
    b = convolutionalize_vgg16(caffe, keep_classifier=True)
    caffe["fc6.weight"] = caffe["fc6.weight"].reshape(4096, 512, 7, 7)  # already convolutional
    c = convolutionalize_vgg16(caffe, keep_classifier=True)
    assert set(a) == set(b) == set(c)
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k
    trunk = convolutionalize_vgg16(tv_sd)
    assert set(trunk) == set(a) - {"score_fr.weight", "score_fr.bias"}


def test_fcn_from_classifier_and_transplant(tv_vgg):
    sd = tv_vgg.state_dict()
    trunk = convolutionalize_vgg16(sd)
    m32 = fcn_from_classifier("fcn32s", sd, num_classes=5)
    assert isinstance(m32, FCN32s) and m32.num_classes == 5
    msd = m32.state_dict()
    for k, v in trunk.items():
        assert torch.equal(msd[k], v), k
    assert not msd["score_fr.weight"].any() and not msd["score_fr.bias"].any()
    torch.testing.assert_close(msd["upscore.weight"], surgery.bilinear_weight(5, 5, 64))

    # Stage 2: FCN-16s starts from the (trained) 32s: trunk and score_fr carry over.
    with torch.no_grad():
        m32.score_fr.weight.normal_()
    m16 = FCN16s(num_classes=5)
    copied = transplant(m32, m16)
    assert set(copied) == set(trunk) | {"score_fr.weight", "score_fr.bias"}
    assert torch.equal(m16.score_fr.weight, m32.score_fr.weight)
    assert torch.equal(m16.fc6.weight, m32.fc6.weight)
    assert not m16.score_pool4.weight.any()  # the new skip keeps its zero init
    torch.testing.assert_close(m16.upscore2.weight, surgery.bilinear_weight(5, 5, 4))

    # Stage 3: 16s -> 8s also brings score_pool4 and upscore2; from a state dict this time.
    with torch.no_grad():
        m16.score_pool4.weight.normal_()
    m8 = FCN8s(num_classes=5)
    copied = transplant(m16.state_dict(), m8)
    assert {"score_pool4.weight", "score_pool4.bias", "upscore2.weight"} <= set(copied)
    assert "upscore16.weight" not in copied
    assert torch.equal(m8.score_pool4.weight, m16.score_pool4.weight)

    # Shape mismatches are skipped, not coerced.
    assert "score_fr.weight" not in transplant(m32, FCN32s(num_classes=3))


def test_vgg16_bad_inputs(tv_vgg):
    sd = tv_vgg.state_dict()
    with pytest.raises(ValueError, match="neither"):
        convolutionalize_vgg16({})
    with pytest.raises(ValueError, match=r"features\.0\.bias"):
        convolutionalize_vgg16({"features.0.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(ValueError, match=r"features\.0\.weight"):
        convolutionalize_vgg16({"features.0.weight": torch.zeros(64, 3, 5, 5)})
    broken = dict(sd)
    del broken["classifier.3.weight"]
    with pytest.raises(ValueError, match=r"classifier\.3\.weight"):
        convolutionalize_vgg16(broken)
    broken = dict(sd, **{"classifier.0.weight": torch.zeros(4096, 9216)})
    with pytest.raises(ValueError, match=r"classifier\.0\.weight"):
        convolutionalize_vgg16(broken)
    caffe = _caffe_names(sd)
    del caffe["conv4_2.bias"]
    with pytest.raises(ValueError, match=r"conv4_2\.bias"):
        convolutionalize_vgg16(caffe)
    with pytest.raises(ValueError, match="fcn_resnet50"):
        fcn_from_classifier("fcn_resnet50", sd)
    with pytest.raises(ValueError):
        transplant(42, FCN32s())


# --- AlexNet ------------------------------------------------------------------------------------

def _caffe_alexnet(gen):
    shapes = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
              "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3),
              "fc6": (4096, 9216), "fc7": (4096, 4096), "fc8": (1000, 4096)}
    sd = {}
    for name, shape in shapes.items():
        sd[f"{name}.weight"] = torch.randn(shape, generator=gen) * 0.01
        sd[f"{name}.bias"] = torch.randn(shape[0], generator=gen)
    return sd


def test_alexnet_fc6_reshape_is_the_dense_layer():
    gen = torch.Generator().manual_seed(4)
    sd = _caffe_alexnet(gen)
    conv = convolutionalize_alexnet(sd)
    layers = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
    assert set(conv) == {f"{n}.{p}" for n in layers for p in ("weight", "bias")}
    assert conv["fc6.weight"].shape == (4096, 256, 6, 6)
    assert torch.equal(conv["conv2.weight"], sd["conv2.weight"])  # grouped layout kept as is
    pool5 = torch.randn(2, 256, 6, 6, generator=gen)
    as_conv = F.conv2d(pool5, conv["fc6.weight"], conv["fc6.bias"])
    dense = pool5.flatten(1) @ sd["fc6.weight"].T + sd["fc6.bias"]
    assert as_conv.shape == (2, 4096, 1, 1)
    torch.testing.assert_close(as_conv.flatten(1), dense, rtol=1e-5, atol=1e-5)
    h = torch.randn(1, 4096, 1, 1, generator=gen)
    torch.testing.assert_close(F.conv2d(h, conv["fc7.weight"], conv["fc7.bias"]).flatten(1),
                               h.flatten(1) @ sd["fc7.weight"].T + sd["fc7.bias"])

    m = fcn_from_classifier("fcn_alexnet", sd, num_classes=21)
    assert isinstance(m, FCNAlexNet)
    assert torch.equal(m.fc6.weight, conv["fc6.weight"])
    assert torch.equal(m.conv5.weight, sd["conv5.weight"])
    assert not m.score_fr.weight.any()
    torch.testing.assert_close(m.upscore.weight, surgery.bilinear_weight(21, 21, 63))


def test_alexnet_bad_inputs():
    sd = _caffe_alexnet(torch.Generator().manual_seed(5))
    # torchvision's AlexNet has 64 conv1 filters and no groups: a different net.
    with pytest.raises(ValueError, match=r"conv1\.weight"):
        convolutionalize_alexnet(dict(sd, **{"conv1.weight": torch.zeros(64, 3, 11, 11)}))
    with pytest.raises(ValueError, match=r"conv4\.weight"):
        convolutionalize_alexnet(dict(sd, **{"conv4.weight": torch.zeros(384, 384, 3, 3)}))
    del sd["fc7.bias"]
    with pytest.raises(ValueError, match=r"fc7\.bias"):
        convolutionalize_alexnet(sd)

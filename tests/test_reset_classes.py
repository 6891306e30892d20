"""surgery.reset_classes: same trunk, fresh score layers (zero) and deconvolutions (bilinear)."""
import pytest
import torch
from torch import nn

from fcnfast.models import ARCHS, build_model
from fcnfast.models.init import bilinear_weight
from fcnfast.surgery import reset_classes

NARROW = dict(widths=(4, 8, 8, 8, 8), fc_width=16)


def _model(arch, device=None):
    vgg = arch in ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce") or arch.startswith(("siftflow_", "nyud_"))
    kwargs = dict(NARROW) if vgg else {}
    if arch.startswith("fcn_resnet"):
        kwargs["aux"] = True
    if device == "meta":
        with torch.device("meta"):
            return build_model(arch, 5, **kwargs)
    torch.manual_seed(0)
    model = build_model(arch, 5, **kwargs)
    for p in model.parameters():  # trained-looking head: nothing zero or bilinear by accident
        p.data.normal_()
    return model


def _is_class_layer(key):
    module = key.rsplit(".", 1)[0]
    return (module.split(".")[-1].startswith(("score", "upscore"))
            or module in ("classifier.4", "aux_classifier.4"))


# The big trunks are built on the meta device (structure only); the narrow VGGs and GoogLeNet
# with real weights, to check the values.
@pytest.mark.parametrize("arch", list(ARCHS))
def test_reset_classes_keeps_trunk_and_resets_head(arch):
    real = arch not in ("fcn_alexnet", "fcn_resnet50", "fcn_resnet101")
    model = _model(arch, None if real else "meta")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = reset_classes(model, 3)
    assert new is not model and new.num_classes == 3 and model.num_classes == 5
    assert type(new) is type(model) and new.arch == model.arch
    sd = new.state_dict()
    assert set(sd) == set(before)
    for key, t in sd.items():
        if _is_class_layer(key):
            continue
        assert t.shape == before[key].shape, key
        if real:
            assert torch.equal(t, before[key]), key
    for name, m in new.named_modules():
        if isinstance(m, nn.ConvTranspose2d):
            assert m.weight.shape[:2] == (3, 3)
            if real:
                torch.testing.assert_close(m.weight, bilinear_weight(3, 3, m.kernel_size[0]))
        elif isinstance(m, nn.Conv2d) and _is_class_layer(name + ".weight"):
            assert m.out_channels == 3, name
            if real:
                assert not m.weight.any() and not m.bias.any(), name
    if real:  # the original is untouched
        for key, t in model.state_dict().items():
            assert torch.equal(t, before[key]), key


def test_reset_classes_forward_shape_and_inplace():
    model = _model("fcn8s")
    out = reset_classes(model, 7, inplace=True)
    assert out is model and model.num_classes == 7
    y = model.eval()(torch.randn(1, 3, 37, 29))
    assert y.shape == (1, 7, 37, 29)
    assert not y.any()  # zero scores everywhere: nothing learnt yet


def test_reset_classes_keeps_input_convention_and_dtype():
    from fcnfast.convention import TORCHVISION_RGB

    model = _model("fcn16s").double()
    model.input_convention = TORCHVISION_RGB  # as load_model sets from a file's metadata
    new = reset_classes(model, 2)
    assert new.input_convention == TORCHVISION_RGB
    assert new.score_fr.weight.dtype == torch.float64 and new.upscore16.weight.dtype == torch.float64


@pytest.mark.parametrize("bad, err", [(0, ValueError), (2.0, TypeError), (True, TypeError)])
def test_reset_classes_rejects_bad_counts(bad, err):
    with pytest.raises(err, match="num_classes"):
        reset_classes(_model("fcn32s"), bad)


def test_reset_classes_rejects_models_without_scores():
    with pytest.raises(ValueError, match="class-scoring"):
        reset_classes(nn.Sequential(nn.Conv2d(3, 3, 1)), 2)

"""FCN-ResNet50/101 against torchvision: same keys, same numbers."""
import pytest
import torch

from fcnfast.convention import TORCHVISION_RGB
from fcnfast.models import ARCHS, FCNResNet50, FCNResNet101, build_model


def _randomise_bn_(model, gen):
    # Fresh BNs are the identity (mean 0, var 1, weight 1, bias 0), which would hide a mis-wired BN.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    return model


@pytest.fixture(scope="module")
def tv_r50(torchvision):
    torch.manual_seed(1)
    tv = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
                                                      num_classes=21, aux_loss=True)
    return _randomise_bn_(tv, torch.Generator().manual_seed(2)).eval()


def test_registered():
    assert ARCHS["fcn_resnet50"] is FCNResNet50 and ARCHS["fcn_resnet101"] is FCNResNet101
    m = build_model("fcn_resnet50", num_classes=5)
    assert m.arch == "fcn_resnet50" and m.num_classes == 5
    assert m.input_convention == TORCHVISION_RGB
    assert m.aux_classifier is None


def test_resnet50_matches_torchvision(tv_r50):
    ours = FCNResNet50(num_classes=21, aux=True)
    sd = tv_r50.state_dict()
    assert set(ours.state_dict()) == set(sd)
    ours.load_state_dict(sd, strict=True)
    ours.eval()
    x = torch.randn(1, 3, 67, 91, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = tv_r50(x)
        out, aux = ours.forward_with_aux(x)
        main = ours(x)
    assert out.shape == (1, 21, 67, 91)
    scale = ref["out"].abs().max().item()
    torch.testing.assert_close(out, ref["out"], atol=1e-5 * max(1.0, scale), rtol=1e-5)
    torch.testing.assert_close(main, out, atol=0, rtol=0)
    torch.testing.assert_close(aux, ref["aux"], atol=1e-5 * max(1.0, ref["aux"].abs().max().item()),
                               rtol=1e-5)


def test_no_aux_loads_torchvision_without_aux(torchvision):
    tv = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
                                                      num_classes=3, aux_loss=False)
    ours = FCNResNet50(num_classes=3)
    assert not any(k.startswith("aux_classifier") for k in tv.state_dict())
    ours.load_state_dict(tv.state_dict(), strict=True)
    _, aux = ours.eval().forward_with_aux(torch.zeros(1, 3, 8, 8))
    assert aux is None


def test_resnet101_keys_and_shapes(torchvision):
    tv = torchvision.models.segmentation.fcn_resnet101(weights=None, weights_backbone=None,
                                                       num_classes=21, aux_loss=True)
    ours = FCNResNet101(num_classes=21, aux=True)
    tsd, osd = tv.state_dict(), ours.state_dict()
    assert set(osd) == set(tsd)
    assert all(osd[k].shape == tsd[k].shape for k in tsd)
    ours.load_state_dict(tsd, strict=True)


def test_dilation_layout():
    b = FCNResNet50().backbone
    # layer3/layer4 trade stride for dilation; their first block keeps the previous dilation.
    assert b.layer2[0].conv2.stride == (2, 2)
    assert b.layer3[0].conv2.stride == (1, 1) and b.layer3[0].conv2.dilation == (1, 1)
    assert b.layer3[1].conv2.dilation == (2, 2) and b.layer3[1].conv2.padding == (2, 2)
    assert b.layer4[0].conv2.dilation == (2, 2) and b.layer4[1].conv2.dilation == (4, 4)
    assert b.layer3[0].downsample[0].stride == (1, 1)
    keys = FCNResNet50().state_dict()
    assert not any(k.startswith(("backbone.fc", "backbone.avgpool")) for k in keys)


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (97, 131)])
def test_output_shapes(hw):
    m = FCNResNet50(num_classes=4, aux=True).eval()
    with torch.no_grad():
        out, aux = m.forward_with_aux(torch.randn(2, 3, *hw))
    assert out.shape == aux.shape == (2, 4, *hw)


def test_output_shape_meta():
    with torch.device("meta"):
        m = FCNResNet101(num_classes=21).eval()
        out = m(torch.empty(1, 3, 500, 500))
    assert out.shape == (1, 21, 500, 500) and out.device.type == "meta"

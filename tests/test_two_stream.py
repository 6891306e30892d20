"""NYUDv2's late-fusion colour + HHA FCN-32s: two VGG16 trunks, scores summed 0.5/0.5 before one
64/32 deconvolution and crop 19. The reference model against the release's definition, the engine
on every backend here, ``segment(rgb, hha=...)``, the release layout and the native format."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import fcnfast
from fcnfast import ops
from fcnfast.checkpoint import read_checkpoint
from fcnfast.convention import NYUD_COLOR_BGR, NYUD_HHA
from fcnfast.engine import Engine
from fcnfast.images import to_network_input
from fcnfast.models import build_model

from test_caffe import caffemodel
from test_engine import assert_firm_agreement, scenes

NARROW = dict(widths=(8, 8, 16, 16, 16), fc_width=32)


def make(seed=0, classes=40):
    torch.manual_seed(seed)
    model = build_model("nyud_fcn32s_color_hha", classes, **NARROW).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights (FCN starts score layers at zero), so labels vary
        for name, p in model.named_parameters():
            if name != "upscore.weight":  # the deconvolution stays bilinear, as released
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def release_scores(model, rgb, hha):
    """The release's computation, written out: BGR − NYUD mean and HHA − its mean, each through
    its own trunk, score_fused = 0.5·colour + 0.5·HHA, upscore, crop 19 (nyud_layers.py, net.py)."""
    def stream(x, sfx):
        for name in model._chains[0 if sfx == "color" else 1]:
            x = getattr(model, name)(x)
        return x

    color = torch.from_numpy(rgb[..., ::-1].astype(np.float32) - np.float32(NYUD_COLOR_BGR.mean))
    hha_in = torch.from_numpy(hha.astype(np.float32) - np.float32(NYUD_HHA.mean))
    with torch.no_grad():
        fused = 0.5 * stream(color.permute(2, 0, 1)[None], "color") + \
            0.5 * stream(hha_in.permute(2, 0, 1)[None], "hha")
        up = F.conv_transpose2d(fused, model.upscore.weight, stride=32)
    h, w = rgb.shape[:2]
    return up[..., 19:19 + h, 19:19 + w]


def test_reference_equals_the_release_definition():
    model = make()
    rgb, hha = scenes(1, 37, 41)[0].numpy(), scenes(1, 37, 41, seed=9)[0].numpy()
    seg = fcnfast.Segmenter(model, device="cpu", backend="torch")
    assert seg.input_names == ("rgb", "hha") and seg.num_classes == 40
    want = release_scores(model, rgb, hha)[0]
    got = seg.logits(rgb, hha=hha)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    assert np.array_equal(seg.segment(rgb, hha=hha), want.argmax(0).numpy())


def _kernel_backends():
    return [b for b in ops.BACKENDS if b != "torch" and ops.availability("preprocess", b, "cpu")[0]]


@pytest.mark.parametrize("dtype", [torch.float32, None], ids=["float32", "default"])
def test_engine_equals_reference(dtype):
    model = make(1, classes=5)  # few classes: clear top-2 margins, so most pixels are firm
    pixels = torch.cat([scenes(2, 45, 67), scenes(2, 45, 67, seed=7)], -1)  # (N, H, W, 6)
    with torch.inference_mode():
        x = to_network_input(pixels, model.input_convention, torch.device("cpu"), torch.float32)
        ref = model(x).float()
    for backend in _kernel_backends() or ["auto"]:
        engine = Engine(model, torch.device("cpu"), dtype, backend=backend)
        assert engine.border is None  # two trunks are no chain
        labels = engine.run(pixels)
        assert labels.shape == (2, 45, 67)
        assert_firm_agreement(labels, ref, engine.dtype)


def test_segmenter_inputs_and_errors():
    model = make(2)
    seg = fcnfast.Segmenter(model, device="cpu")
    rgb, hha = scenes(1, 30, 34)[0].numpy(), scenes(1, 30, 34, seed=3)[0].numpy()
    want = fcnfast.Segmenter(model, device="cpu", backend="torch").segment(rgb, hha=hha)
    assert np.array_equal(seg.segment(rgb, hha=hha), want)
    both = seg.segment_batch([rgb, rgb], hha=[hha, hha])
    assert all(np.array_equal(b, want) for b in both)
    streamed = list(seg.stream([(rgb, hha), (rgb, hha)], batch_size=2))
    assert all(np.array_equal(s, want) for s in streamed)
    assert seg.check(rgb, hha=hha).ok
    with pytest.raises(TypeError, match="takes an HHA image too"):
        seg.segment(rgb)
    with pytest.raises(fcnfast.ImageError, match="differ in size"):
        seg.segment(rgb, hha=hha[:20])
    with pytest.raises(ValueError, match="2 images but 1 HHA"):
        seg.segment_batch([rgb, rgb], hha=[hha])
    with pytest.raises(TypeError, match="hha= is for models"):
        fcnfast.Segmenter(build_model("fcn32s", 3, **NARROW), device="cpu").segment(rgb, hha=hha)


def test_release_layout_and_native_round_trip(tmp_path):
    model = make(3)
    path = caffemodel(model, tmp_path / "nyud-fcn32s-color-hha.caffemodel")
    ckpt = read_checkpoint(path)
    assert ckpt.arch == "nyud_fcn32s_color_hha" and ckpt.num_classes == 40
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.state_dict[k], v), k
    rgb, hha = scenes(1, 29, 31)[0].numpy(), scenes(1, 29, 31, seed=5)[0].numpy()
    want = fcnfast.Segmenter(model, device="cpu").segment(rgb, hha=hha)
    seg = fcnfast.load(path, device="cpu")
    assert seg.input_convention == (NYUD_COLOR_BGR, NYUD_HHA)
    assert np.array_equal(seg.segment(rgb, hha=hha), want)
    native = tmp_path / "nyud.safetensors"
    fcnfast.save(seg, native)
    again = fcnfast.load(native, device="cpu")
    assert again.input_convention == (NYUD_COLOR_BGR, NYUD_HHA)
    assert np.array_equal(again.segment(rgb, hha=hha), want)

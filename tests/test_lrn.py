"""The native cross-channel LRN (csrc/cpu/lrn.cpp, fcnfast.ops.native.lrn) against torch's
local_response_norm in float64, and the engine's use of it for AlexNet and GoogLeNet."""
import pytest
import torch
import torch.nn.functional as F

from fcnfast.engine.layers import NativeLRN, inference_copy
from fcnfast.models import build_model
from fcnfast.ops import native

pytestmark = pytest.mark.skipif(not native.lrn_available(), reason="fcnfast._C with the LRN kernel is not built")

TOL = {torch.float32: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def reference(x, size, alpha, beta, k):
    return F.local_response_norm(x.double(), size, alpha, beta, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,size,beta", [
    ((1, 1, 1, 1), 5, 0.75),      # one channel: the window is all padding but itself
    ((2, 3, 4, 5), 5, 0.75),      # fewer channels than the window
    ((1, 64, 7, 13), 5, 0.75),    # AlexNet/GoogLeNet's
    ((1, 37, 5, 3), 4, 0.6),      # an even window (2 before, 1 after), the powf path
])
def test_matches_torch_in_float64(dtype, shape, size, beta):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 40).to(dtype).contiguous(memory_format=torch.channels_last)
    y = native.lrn(x, size, 1e-3, beta, 2.0)
    ref = reference(x, size, 1e-3, beta, 2.0)
    assert y.shape == x.shape and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
    assert err < TOL[dtype], err


def test_a_view_of_a_map_and_a_plain_layout():
    x = (torch.randn(2, 24, 17, 19) * 30).contiguous(memory_format=torch.channels_last)
    view = x[:, :, 3:16, 2:17]  # the border cache's core: strided pixels, contiguous channels
    torch.testing.assert_close(native.lrn(view, 5, 1e-4, 0.75, 1.0).double(),
                               reference(view, 5, 1e-4, 0.75, 1.0), rtol=1e-6, atol=1e-9)
    plain = x.contiguous()  # channels not contiguous: copied to channels-last first
    torch.testing.assert_close(native.lrn(plain, 5, 1e-4, 0.75, 1.0), native.lrn(x, 5, 1e-4, 0.75, 1.0))
    assert native.lrn(x[:, :, :0], 5, 1e-4, 0.75, 1.0).shape == (2, 24, 0, 19)


def test_rejects_what_it_cannot_take():
    with pytest.raises(ValueError, match="float CPU tensor"):
        native.lrn(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 5, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="float CPU tensor"):
        native.lrn(torch.zeros(3, 4, 4), 5, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="size must be"):
        native.lrn(torch.zeros(1, 3, 4, 4), 0, 1e-4, 0.75, 1.0)


@pytest.mark.parametrize("arch", ["fcn_alexnet", "fcn_googlenet"])
def test_the_engine_copy_runs_every_lrn_natively(arch):
    model = build_model(arch, 5).eval()
    lrns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.LocalResponseNorm)]
    net = inference_copy(model, torch.device("cpu"), torch.float32)
    assert lrns and all(isinstance(net.get_submodule(n), NativeLRN) for n in lrns)

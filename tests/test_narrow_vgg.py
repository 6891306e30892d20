"""Width-configurable VGG FCNs: same keys and crops as VGG16, widths read back from the weights."""
import pytest
import torch

import fcnfast
from fcnfast import checkpoint as ckpt
from fcnfast.models import build_model

NARROW = dict(widths=(4, 8, 12, 16, 20), fc_width=24)


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"])
def test_narrow_vgg_keeps_keys_and_crops(arch):
    with torch.device("meta"):
        full = build_model(arch, 4)
    narrow = build_model(arch, 4, **NARROW)
    assert list(narrow.state_dict()) == list(full.state_dict())
    assert narrow.crop_offsets == full.crop_offsets
    assert narrow.fc6.weight.shape == (24, 20, 7, 7)
    assert narrow(torch.randn(1, 3, 23, 31)).shape == (1, 4, 23, 31)


@pytest.mark.parametrize("fmt", ["native", "torch"])
@pytest.mark.parametrize("arch", ["fcn32s", "fcn8s"])
def test_narrow_checkpoint_round_trip(tmp_path, arch, fmt):
    torch.manual_seed(0)
    model = build_model(arch, 4, **NARROW)
    path = tmp_path / ("m.safetensors" if fmt == "native" else "m.pt")
    if fmt == "native":
        ckpt.save_native(model, path, class_names=list("abcd"))
    else:
        torch.save({"model_state_dict": model.state_dict()}, path)
    loaded, info = ckpt.load_model(path)
    assert (info.arch, loaded.widths, loaded.fc_width) == (arch, NARROW["widths"], 24)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    seg = fcnfast.load(path, device="cpu")
    assert seg.model.widths == NARROW["widths"]


@pytest.mark.parametrize("kwargs, err", [
    (dict(widths=(4, 8, 12, 16)), ValueError),
    (dict(widths=(4, 8, 0, 16, 16)), ValueError),
    (dict(widths="wide"), TypeError),
    (dict(fc_width=0), ValueError),
])
def test_bad_widths_are_refused(kwargs, err):
    with pytest.raises(err, match="widths|fc_width"):
        build_model("fcn8s", 3, **kwargs)

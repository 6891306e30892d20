"""Checkpoint reading, detection, validation and the native format; the VOC palette.

Models are built weightless (meta device) and given cheap deterministic values, so even the VGG
nets cost no random initialisation; full VGG files (~0.5 GB) are written only where a test needs
one.
"""
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fcnfast.checkpoint import (Checkpoint, CheckpointError, _resolve_arch, detect_arch,
                                load_model, read_checkpoint, save_native)
from fcnfast.convention import CAFFE_BGR, TORCHVISION_RGB, InputConvention
from fcnfast.models import ARCHS, FCN8sAtOnce, build_model
from fcnfast.palette import VOC_CLASSES, voc_palette

N = 5  # classes in the test models: small heads, and not VOC's 21 so nothing passes by default


def filled_model(arch, num_classes=N, **kwargs):
    """A model with distinct, deterministic weights and no random-init cost."""
    with torch.device("meta"):
        model = build_model(arch, num_classes, **kwargs)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i, t in enumerate(model.state_dict().values()):
            if not t.is_floating_point():
                t.fill_(i)
            elif t.numel() <= 1 << 20:
                t.copy_(torch.randn(t.shape, generator=gen))
            else:  # the big fc layers: a constant per tensor is enough to catch mix-ups
                t.fill_(0.001 * i)
    return model.eval()


def meta_state_dict(arch, num_classes=N, **kwargs):
    with torch.device("meta"):
        return build_model(arch, num_classes, **kwargs).state_dict()


def assert_same_tensors(got, want):
    assert list(got) == list(want) or set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k], v), k


@pytest.fixture(scope="module")
def googlenet():
    return filled_model("fcn_googlenet")


@pytest.fixture(scope="module")
def googlenet_sd(googlenet):
    return dict(googlenet.state_dict())


@pytest.fixture
def good_pt(tmp_path, googlenet_sd):
    path = tmp_path / "good.pt"
    torch.save(googlenet_sd, path)
    return path


@pytest.fixture
def good_st(tmp_path, googlenet_sd):
    path = tmp_path / "good.safetensors"
    save_file(googlenet_sd, str(path))
    return path


def save_pt(tmp_path, payload, name="x.pt"):
    path = tmp_path / name
    torch.save(payload, path)
    return path


# --- round trips --------------------------------------------------------------------------------

def _write(fmt, model, sd, path):
    if fmt == "bare":
        torch.save(sd, path)
    elif fmt == "legacy_pickle":
        torch.save(sd, path, _use_new_zipfile_serialization=False)
    elif fmt == "model_state_dict":  # pytorch-fcn's trainer layout
        torch.save({"epoch": 3, "iteration": 1000, "arch": type(model).__name__,
                    "optim_state_dict": {"state": {}, "param_groups": [{"lr": 1e-10}]},
                    "model_state_dict": sd, "best_mean_iu": 0.6}, path)
    elif fmt == "state_dict":
        torch.save({"state_dict": sd, "epoch": 1}, path)
    elif fmt == "model":
        torch.save({"model": sd}, path)
    elif fmt == "nested":
        torch.save({"state_dict": {"model": sd}}, path)
    elif fmt == "module_prefix":  # DataParallel / DDP
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    elif fmt == "compile_prefix":
        torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, path)
    elif fmt in ("safetensors", "safetensors_named_pth"):
        save_file(sd, str(path))
    elif fmt == "native":
        save_native(model, path)
    else:
        raise ValueError(fmt)


FORMATS = {"bare": "torch", "legacy_pickle": "torch", "model_state_dict": "torch",
           "state_dict": "torch", "model": "torch", "nested": "torch", "module_prefix": "torch",
           "compile_prefix": "torch", "safetensors": "safetensors",
           "safetensors_named_pth": "safetensors", "native": "fcnfast"}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip_every_format(tmp_path, googlenet, googlenet_sd, fmt):
    path = tmp_path / ("ckpt.pth" if fmt != "safetensors" else "ckpt.safetensors")
    _write(fmt, googlenet, googlenet_sd, path)
    ckpt = read_checkpoint(path)
    assert (ckpt.arch, ckpt.num_classes, ckpt.format) == ("fcn_googlenet", N, FORMATS[fmt])
    assert_same_tensors(ckpt.state_dict, googlenet_sd)


@pytest.mark.parametrize("arch,fmt", [("fcn32s", "safetensors"), ("fcn_alexnet", "bare"),
                                      ("fcn_resnet50", "module_prefix"),
                                      ("fcn_resnet101", "safetensors")])
def test_round_trip_arch(tmp_path, arch, fmt):
    model = filled_model(arch)
    sd = dict(model.state_dict())
    path = tmp_path / "ckpt.bin"
    _write(fmt, model, sd, path)
    ckpt = read_checkpoint(path)
    assert (ckpt.arch, ckpt.num_classes) == (arch, N)
    assert_same_tensors(ckpt.state_dict, sd)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_detect_every_arch(arch):
    kwargs = {"aux": True} if arch.startswith("fcn_resnet") else {}
    want = "fcn8s" if arch == "fcn8s_atonce" else arch  # identical keys: see detect_arch
    assert detect_arch(meta_state_dict(arch, 7, **kwargs)) == (want, 7)


def test_atonce_override_and_load(tmp_path):
    model = filled_model("fcn8s", 3)
    sd = dict(model.state_dict())
    path = save_pt(tmp_path, {"model_state_dict": sd, "arch": "FCN8s"})
    assert read_checkpoint(path).arch == "fcn8s"
    ckpt = read_checkpoint(path, arch="fcn8s_atonce")
    assert (ckpt.arch, ckpt.num_classes) == ("fcn8s_atonce", 3)
    loaded, _ = load_model(ckpt)
    assert type(loaded) is FCN8sAtOnce and not loaded.training
    assert_same_tensors(loaded.state_dict(), sd)


def test_trainer_arch_record_picks_atonce():
    # pytorch-fcn's trainer saves the class name; it settles what the keys cannot.
    sd = meta_state_dict("fcn8s")
    assert _resolve_arch(sd, None, "FCN8sAtOnce", "x") == ("fcn8s_atonce", N)
    assert _resolve_arch(sd, None, "FCN8s", "x") == ("fcn8s", N)
    assert _resolve_arch(meta_state_dict("fcn32s"), None, "FCN8sAtOnce", "x")[0] == "fcn32s"


def test_arch_override_checked_against_keys(good_pt):
    with pytest.raises(CheckpointError, match="does not fit fcn_alexnet"):
        read_checkpoint(good_pt, arch="fcn_alexnet")


def test_arch_override_unknown_name(good_pt):
    with pytest.raises(CheckpointError, match="unknown arch='fcn64s'.*fcn32s"):
        read_checkpoint(good_pt, arch="fcn64s")


def test_load_model_googlenet(good_st, googlenet_sd):
    model, ckpt = load_model(good_st)
    assert type(model) is ARCHS["fcn_googlenet"] and not model.training
    assert ckpt.format == "safetensors" and ckpt.class_names is None
    assert_same_tensors(model.state_dict(), googlenet_sd)


def test_load_model_resnet_aux_without_bn_counters(tmp_path):
    model = filled_model("fcn_resnet50", aux=True)
    # Older torchvision checkpoints have no num_batches_tracked.
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = save_pt(tmp_path, sd)
    loaded, ckpt = load_model(path)
    assert ckpt.arch == "fcn_resnet50" and loaded.aux_classifier is not None
    assert loaded.input_convention == TORCHVISION_RGB
    assert_same_tensors({k: v for k, v in loaded.state_dict().items() if k in sd}, sd)


# --- native format ------------------------------------------------------------------------------

def test_native_round_trip_metadata(tmp_path, googlenet, googlenet_sd):
    names = [f"thing{i}" for i in range(N)]
    conv = InputConvention("RGB", 1.0, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    palette = voc_palette(N)
    path = tmp_path / "model.fcn"
    save_native(googlenet, path, class_names=names, input_convention=conv, palette=palette)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "fcnfast"
    assert (ckpt.arch, ckpt.num_classes, ckpt.class_names) == ("fcn_googlenet", N, names)
    assert ckpt.input_convention == conv
    assert ckpt.palette == palette.tolist()
    assert_same_tensors(ckpt.state_dict, googlenet_sd)
    model, _ = load_model(path)
    assert model.input_convention == conv


def test_native_defaults_and_vgg(tmp_path):
    model = filled_model("fcn32s", 2)
    path = tmp_path / "fcn32s.safetensors"
    save_native(model, path)
    ckpt = read_checkpoint(path)
    assert (ckpt.arch, ckpt.num_classes, ckpt.format) == ("fcn32s", 2, "fcnfast")
    assert ckpt.input_convention == CAFFE_BGR and ckpt.class_names is None and ckpt.palette is None
    assert_same_tensors(ckpt.state_dict, model.state_dict())


def test_native_tied_tensors_and_wrapped_model(tmp_path, googlenet_sd):
    model = filled_model("fcn_googlenet")
    # Two same-shaped layers sharing one tensor: safetensors refuses that unless we clone.
    model.inception_4c.pool_proj.weight = model.inception_4b.pool_proj.weight
    path = tmp_path / "tied.safetensors"
    save_native(nn.DataParallel(model), path)
    ckpt = read_checkpoint(path)
    assert_same_tensors(ckpt.state_dict, model.state_dict())


def test_native_metadata_disagrees_with_tensors(tmp_path, googlenet_sd):
    path = tmp_path / "liar.safetensors"
    save_file(googlenet_sd, str(path), metadata={
        "format": "fcnfast", "format_version": "1", "arch": "fcn_googlenet", "num_classes": "20",
        "class_names": "null", "input": "null", "palette": "null"})
    with pytest.raises(CheckpointError, match="num_classes=20 but the tensors have 5 classes"):
        read_checkpoint(path)


def test_native_unknown_version(tmp_path, googlenet_sd):
    path = tmp_path / "future.safetensors"
    save_file(googlenet_sd, str(path), metadata={"format": "fcnfast", "format_version": "9",
                                                 "arch": "fcn_googlenet", "num_classes": "5"})
    with pytest.raises(CheckpointError, match="unsupported fcnfast format_version '9'"):
        read_checkpoint(path)


def test_native_bad_metadata_json(tmp_path, googlenet_sd):
    path = tmp_path / "bad.safetensors"
    save_file(googlenet_sd, str(path), metadata={
        "format": "fcnfast", "format_version": "1", "arch": "fcn_googlenet", "num_classes": "5",
        "class_names": "[not json"})
    with pytest.raises(CheckpointError, match="'class_names' is not valid JSON"):
        read_checkpoint(path)


def test_save_native_rejects_wrong_class_names(tmp_path, googlenet):
    with pytest.raises(ValueError, match="3 class names for 5 classes"):
        save_native(googlenet, tmp_path / "x.safetensors", class_names=["a", "b", "c"])
    assert not os.listdir(tmp_path)


def test_save_native_rejects_foreign_model(tmp_path):
    with pytest.raises(ValueError, match="fcnfast reference model"):
        save_native(nn.Conv2d(1, 1, 1), tmp_path / "x.safetensors")


# --- bad files ----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such file") as info:
        read_checkpoint(tmp_path / "nope.pt")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory") as info:
        read_checkpoint(tmp_path)
    assert isinstance(info.value.__cause__, IsADirectoryError)


def test_empty_file(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: empty file"):
        read_checkpoint(tmp_path / "empty.pt")


def test_truncated_pt(tmp_path, good_pt):
    data = good_pt.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError,
                       match="half.pt: cannot read torch checkpoint.*truncated") as info:
        read_checkpoint(tmp_path / "half.pt")
    assert info.value.__cause__ is not None


def test_truncated_safetensors(tmp_path, good_st):
    data = good_st.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated safetensors file"):
        read_checkpoint(tmp_path / "half.safetensors")


def test_random_bytes(tmp_path):
    junk = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (tmp_path / "junk.pth").write_bytes(b"\x13" + junk)  # not 0x80, so not a pickle by chance
    with pytest.raises(CheckpointError, match="not a torch or safetensors checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = save_pt(tmp_path, {"model_state_dict": {"x": _Exploit(marker)}}, "evil.pt")
    with pytest.raises(CheckpointError, match="refused to unpickle.*weights_only"):
        read_checkpoint(path)
    assert not marker.exists()


def test_malicious_raw_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Exploit(marker), protocol=2))
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        read_checkpoint(path)
    assert not marker.exists()


def _safetensors_with_header(path, header: bytes, length=None):
    length = len(header) if length is None else length
    path.write_bytes(length.to_bytes(8, "little") + header + b"\0" * 64)
    return path


def test_safetensors_header_bad_json(tmp_path):
    path = _safetensors_with_header(tmp_path / "bad.safetensors", b'{"a": {"dtype": "F32",,}}')
    with pytest.raises(CheckpointError, match="corrupt safetensors header: not valid JSON"):
        read_checkpoint(path)


def test_safetensors_header_bad_length(tmp_path):
    path = _safetensors_with_header(tmp_path / "bad.safetensors", b"{}", length=10 ** 12)
    with pytest.raises(CheckpointError, match="length field says 1000000000000 bytes"):
        read_checkpoint(path)


def test_unknown_architecture(tmp_path):
    path = save_pt(tmp_path, {"encoder.weight": torch.zeros(3), "decoder.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError,
                       match=r"unknown architecture.*encoder\.weight.*pass arch= one of.*fcn8s"):
        read_checkpoint(path)


def test_missing_layer(tmp_path, googlenet_sd):
    sd = {k: v for k, v in googlenet_sd.items() if not k.startswith("inception_4a.1x1.")}
    with pytest.raises(CheckpointError,
                       match=r"missing 2 keys: inception_4a\.1x1\.weight, inception_4a\.1x1\.bias"):
        read_checkpoint(save_pt(tmp_path, sd))


def test_unexpected_key(tmp_path, googlenet_sd):
    sd = dict(googlenet_sd, **{"loss3.classifier.weight": torch.zeros(1000, 1024)})
    with pytest.raises(CheckpointError, match=r"unexpected 1 key: loss3\.classifier\.weight"):
        read_checkpoint(save_pt(tmp_path, sd))


def test_shape_mismatch(tmp_path, googlenet_sd):
    sd = dict(googlenet_sd, **{"conv2.3x3.weight": torch.zeros(192, 64, 5, 5)})
    with pytest.raises(CheckpointError,
                       match=r"shape mismatch in 1: conv2\.3x3\.weight \(192, 64, 5, 5\) "
                             r"\(expected \(192, 64, 3, 3\)\)"):
        read_checkpoint(save_pt(tmp_path, sd))


def test_class_count_disagreement(tmp_path, googlenet_sd):
    sd = dict(googlenet_sd, **{"upscore.weight": torch.zeros(4, 4, 63, 63)})
    with pytest.raises(CheckpointError, match="shapes disagree: score_fr.weight has 5 classes, "
                                              "upscore.weight has 4"):
        read_checkpoint(save_pt(tmp_path, sd))


def test_vgg_class_count_disagreement():
    sd = dict(meta_state_dict("fcn16s", 21))
    sd["score_pool4.weight"] = torch.empty(20, 512, 1, 1, device="meta")
    with pytest.raises(CheckpointError, match="score_fr.weight has 21 classes, score_pool4.weight "
                                              "has 20"):
        detect_arch(sd)


def test_integer_weights(tmp_path, googlenet_sd):
    sd = dict(googlenet_sd, **{"score_fr.bias": torch.zeros(N, dtype=torch.int64)})
    with pytest.raises(CheckpointError, match="not floating point.*score_fr.bias is torch.int64"):
        read_checkpoint(save_pt(tmp_path, sd))


def test_non_tensor_value(tmp_path, googlenet_sd):
    sd = dict(googlenet_sd, **{"score_fr.bias": [0.0] * N})
    with pytest.raises(CheckpointError, match="value of 'score_fr.bias' is a list, not a tensor"):
        read_checkpoint(save_pt(tmp_path, sd))


def test_non_dict_payload(tmp_path):
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        read_checkpoint(save_pt(tmp_path, [torch.zeros(2)]))


def test_empty_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="state dict is empty"):
        read_checkpoint(save_pt(tmp_path, {"state_dict": {}}))


def test_resnet_of_unknown_depth():
    sd = {k: v for k, v in meta_state_dict("fcn_resnet50").items()
          if not k.startswith("backbone.layer3.5.")}
    with pytest.raises(CheckpointError, match="5 blocks in layer3"):
        detect_arch(sd)


def test_hand_built_checkpoint_is_checked():
    bad = Checkpoint("fcn_googlenet", N, {"score_fr.weight": torch.zeros(N, 1024, 1, 1)})
    with pytest.raises(CheckpointError, match="does not fit fcn_googlenet.*missing"):
        load_model(bad)


# --- palette ------------------------------------------------------------------------------------

def test_voc_palette_first_entries():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert pal[255].tolist() == [224, 224, 192]  # the devkit's "void" colour


def test_voc_palette_extends_past_256():
    pal = voc_palette(1000)
    assert (pal[:256] == voc_palette()).all()
    assert len({tuple(c) for c in pal.tolist()}) == 1000
    with pytest.raises(ValueError):
        voc_palette(-1)


def test_voc_classes():
    assert len(VOC_CLASSES) == 21
    assert VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"
    assert VOC_CLASSES[-1] == "tvmonitor"

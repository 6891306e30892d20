"""SIFT Flow's one-trunk, two-head FCNs (semantic 33 classes, geometric 3): the reference model,
the engine on every backend here, the Segmenter's {head: labels} results, the Caffe release
layout and the CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fcnfast
from fcnfast import ops
from fcnfast.checkpoint import read_checkpoint
from fcnfast.engine import Engine
from fcnfast.images import to_network_input
from fcnfast.models import build_model

from test_caffe import caffemodel
from test_engine import assert_firm_agreement, scenes

NARROW = dict(widths=(8, 8, 16, 16, 16), fc_width=32)
ARCHS = ("siftflow_fcn32s", "siftflow_fcn16s", "siftflow_fcn8s")
HEADS = ("semantic", "geometric")


def make(arch, seed=0):
    model = build_model(arch, 33, **NARROW).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "upscore" not in name:  # deconvolutions stay bilinear, as released
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def reference(model, pixels):
    with torch.inference_mode():
        x = to_network_input(pixels, model.input_convention, torch.device("cpu"), torch.float32)
        return {h: s.float() for h, s in model(x).items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_two_heads_with_their_release_names_and_crops(arch):
    m = make(arch)
    assert m.heads == HEADS and m.head_classes == (33, 3) and m.num_classes == 33
    keys = set(m.state_dict())
    assert {"score_fr_sem.weight", "score_fr_geo.weight"} <= keys and "score_fr.weight" not in keys
    stride = int(arch.rsplit("fcn", 1)[1][:-1])
    final = {32: "upscore", 16: "upscore16", 8: "upscore8"}[stride]
    want = {32: 19, 16: 27, 8: 31}[stride]  # the single-head nets' crops: one geometry
    assert m.crop_offsets[f"{final}_sem"] == m.crop_offsets[f"{final}_geo"] == want
    out = m(torch.randn(1, 3, 29, 31))
    assert set(out) == set(HEADS)
    assert out["semantic"].shape == (1, 33, 29, 31) and out["geometric"].shape == (1, 3, 29, 31)


def _kernel_backends():
    return [b for b in ops.BACKENDS if b != "torch" and ops.availability("preprocess", b, "cpu")[0]]


@pytest.mark.parametrize("dtype", [torch.float32, None], ids=["float32", "default"])
@pytest.mark.parametrize("arch", ARCHS)
def test_engine_equals_reference_on_both_heads(arch, dtype):
    model = make(arch)
    pixels = scenes(2, 45, 67)
    ref = reference(model, pixels)
    backends = _kernel_backends() or ["auto"]
    # float32 is the exact path: one backend shows it; the low-precision default runs on every one
    # (the interpreted Triton kernels on one stride: the ops are the same at every stride).
    if dtype == torch.float32 or arch != "siftflow_fcn16s":
        backends = [b for b in backends if b != "triton"][:1] or backends[:1]
    for backend in backends:
        engine = Engine(model, torch.device("cpu"), dtype, backend=backend)
        labels = engine.run(pixels)
        assert labels.shape == (2, 2, 45, 67) and labels.dtype == torch.uint8
        for k, head in enumerate(HEADS):
            assert_firm_agreement(labels[:, k], ref[head], engine.dtype)


def test_segmenter_returns_each_heads_labels():
    model = make("siftflow_fcn16s")
    img = scenes(1, 41, 47)[0].numpy()
    ref = reference(model, torch.from_numpy(img)[None])
    seg = fcnfast.Segmenter(model, device="cpu", backend="torch")
    out = seg.segment(img)
    assert set(out) == set(HEADS)
    for head in HEADS:
        assert out[head].dtype == np.uint8
        assert np.array_equal(out[head], ref[head].argmax(1)[0].numpy())
    assert seg.classes[0] == "awning" and seg.head_class_names["geometric"] == ["sky", "horizontal",
                                                                              "vertical"]
    batch = seg.segment_batch(np.stack([img, img]))
    assert all(np.array_equal(batch[h][1], out[h]) for h in HEADS)
    streamed = list(fcnfast.Segmenter(model, device="cpu").stream([img, img], batch_size=2))
    assert len(streamed) == 2 and set(streamed[0]) == set(HEADS)
    logits = seg.logits(torch.from_numpy(img))
    assert logits["semantic"].shape == (33, 41, 47) and logits["geometric"].shape == (3, 41, 47)
    report = fcnfast.Segmenter(model, device="cpu").check(img)
    assert report.ok and report.pixels == 2 * 41 * 47


@pytest.mark.parametrize("arch", ARCHS)
def test_release_layout_loads_as_the_model(tmp_path, arch):
    model = make(arch, seed=3)
    path = caffemodel(model, tmp_path / f"{arch}.caffemodel", v1=arch.endswith("32s"))
    ckpt = read_checkpoint(path)
    assert ckpt.arch == arch and ckpt.num_classes == 33
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.state_dict[k], v), k
    img = scenes(1, 33, 35, seed=4)[0].numpy()
    got = fcnfast.load(path, device="cpu").segment(img)
    want = fcnfast.Segmenter(model, device="cpu").segment(img)
    assert all(np.array_equal(got[h], want[h]) for h in HEADS)


def test_cli_writes_each_heads_maps(tmp_path):
    from PIL import Image

    model = make("siftflow_fcn8s", seed=5)
    ckpt = tmp_path / "siftflow.safetensors"
    fcnfast.save(model, ckpt)
    img = tmp_path / "scene.png"
    Image.fromarray(scenes(1, 30, 40, seed=6)[0].numpy()).save(img)
    r = subprocess.run([sys.executable, "-m", "fcnfast", "segment", str(img), "--model", str(ckpt),
                        "-o", str(tmp_path / "out"), "--overlay", "--device", "cpu"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    want = fcnfast.load(ckpt, device="cpu").segment(str(img))
    for head in HEADS:
        labels = np.asarray(Image.open(tmp_path / "out" / f"scene_{head}_labels.png"))
        assert np.array_equal(labels, want[head])
        assert (tmp_path / "out" / f"scene_{head}_overlay.png").exists()

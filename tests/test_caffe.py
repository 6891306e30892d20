"""Reading the official Caffe releases without Caffe (``fcnfast.caffe``): .caffemodel files written
by the test itself in the protobuf wire format, in both the ``layer`` and the legacy V1 ``layers``
layouts, packed and unpacked floats, from reference models with random weights."""
import struct
import time

import numpy as np
import pytest
import torch

import fcnfast
from fcnfast import ops
from fcnfast.caffe import ATONCE_SCALES
from fcnfast.checkpoint import CheckpointError, read_checkpoint
from fcnfast.models import build_model

NARROW = dict(widths=(8, 8, 16, 16, 16), fc_width=32)


# --- a small protobuf writer ------------------------------------------------------------------

def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint((number << 3) | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def blob(a: np.ndarray, *, legacy: bool, packed: bool) -> bytes:
    a = np.asarray(a, dtype=np.float32)
    if legacy:  # num, channels, height, width, padded with leading 1s
        dims = (1,) * (4 - a.ndim) + a.shape
        head = b"".join(key(i + 1, 0) + varint(d) for i, d in enumerate(dims))
    else:
        head = length_delimited(7, length_delimited(1, b"".join(varint(d) for d in a.shape)))
    flat = a.reshape(-1)
    if packed:
        data = length_delimited(5, flat.astype("<f4").tobytes())
    else:
        data = b"".join(key(5, 5) + struct.pack("<f", v) for v in flat.tolist())
    return head + data


def layer(name: str, type_: str, blobs, *, v1: bool, packed: bool) -> bytes:
    if v1:
        code = {"Convolution": 4, "Deconvolution": 39, "Scale": 142}[type_]
        body = length_delimited(4, name.encode()) + key(5, 0) + varint(code)
        body += b"".join(length_delimited(6, blob(b, legacy=True, packed=packed)) for b in blobs)
        return length_delimited(2, body)
    body = length_delimited(1, name.encode()) + length_delimited(2, type_.encode())
    body += b"".join(length_delimited(7, blob(b, legacy=False, packed=packed)) for b in blobs)
    return length_delimited(100, body)


def caffemodel(model, path, *, v1=False, packed=True, extra=()):
    """Write ``model``'s weights as a Caffe NetParameter: one layer per module with weights, named
    as the release names it ('/' for nesting), in state-dict order."""
    groups = {}
    for k, v in model.state_dict().items():
        prefix, _, kind = k.rpartition(".")
        groups.setdefault(prefix, {})[kind] = v.detach().numpy()
    out = length_delimited(1, b"test-net")
    for prefix, params in groups.items():
        type_ = "Deconvolution" if "up" in prefix else "Convolution"
        blobs = [params["weight"]] + ([params["bias"]] if "bias" in params else [])
        out += layer(prefix.replace(".", "/"), type_, blobs, v1=v1, packed=packed)
    for name, type_, blobs in extra:
        out += layer(name, type_, blobs, v1=v1, packed=packed)
    path.write_bytes(out)
    return path


def randomised(arch, seed=0, classes=5, learned=True, **kwargs):
    """Random weights; ``learned=False`` keeps the deconvolutions bilinear, as released."""
    model = build_model(arch, classes, **kwargs).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if learned or "upscore" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def scene(h=37, w=53, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- releases load as the model they came from --------------------------------------------------

@pytest.mark.parametrize("v1,packed", [(False, True), (True, True), (False, False)],
                         ids=["layer-packed", "v1-packed", "layer-unpacked"])
@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"])
def test_vgg_releases_load_with_identical_weights_and_labels(tmp_path, arch, v1, packed):
    model = randomised(arch, **NARROW)
    extra = ()
    if arch == "fcn8s_atonce":
        extra = [(name, "Scale", [np.full(width, scale, np.float32)])
                 for (name, scale), width in zip(ATONCE_SCALES.items(), (16, 16))]
    path = caffemodel(model, tmp_path / f"{arch}.caffemodel", v1=v1, packed=packed, extra=extra)
    ckpt = read_checkpoint(path)
    assert ckpt.arch == arch and ckpt.num_classes == 5 and ckpt.format == "caffe"
    want = model.state_dict()
    assert set(ckpt.state_dict) == set(want)
    for k, v in want.items():
        assert torch.equal(ckpt.state_dict[k], v), k
    loaded = fcnfast.load(path, device="cpu", backend="torch")
    same = fcnfast.Segmenter(model, device="cpu", backend="torch")
    img = scene()
    assert np.array_equal(loaded.segment(img), same.segment(img))
    assert loaded.input_convention == fcnfast.CAFFE_BGR


@pytest.mark.parametrize("arch", ["fcn_alexnet", "fcn_googlenet"])
def test_alexnet_and_googlenet_releases(tmp_path, arch):
    model = randomised(arch)
    path = caffemodel(model, tmp_path / f"{arch}.caffemodel", v1=arch == "fcn_alexnet")
    ckpt = read_checkpoint(path)
    assert ckpt.arch == arch and ckpt.num_classes == 5
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.state_dict[k], v), k
    img = scene(29, 31)
    loaded = fcnfast.load(path, device="cpu")  # the engine
    assert np.array_equal(loaded.segment(img), fcnfast.Segmenter(model, device="cpu").segment(img))


def test_convert_writes_the_native_format(tmp_path, run_main):
    model = randomised("fcn16s", **NARROW)
    src = caffemodel(model, tmp_path / "fcn16s.caffemodel")
    for out in (tmp_path / "fcn16s.safetensors", tmp_path / "fcn16s.pt"):
        r = run_main("convert", src, out)
        assert r.returncode == 0, r.stderr
        img = scene(41, 43)
        assert np.array_equal(fcnfast.load(out, device="cpu", backend="torch").segment(img),
                              fcnfast.Segmenter(model, device="cpu", backend="torch").segment(img))


def test_wrong_scale_is_refused(tmp_path):
    model = randomised("fcn8s_atonce", **NARROW)
    path = caffemodel(model, tmp_path / "bad.caffemodel",
                      extra=[("scale_pool4", "Scale", [np.full(16, 0.5, np.float32)])])
    with pytest.raises(CheckpointError, match="scale_pool4 scales by 0.5"):
        read_checkpoint(path)


# --- malformed files: clear errors, quickly -----------------------------------------------------

def _bad_files(tmp_path):
    good = caffemodel(randomised("fcn32s", **NARROW), tmp_path / "good.caffemodel").read_bytes()
    conv = length_delimited(1, b"conv1_1") + length_delimited(2, b"Convolution")
    huge_shape = length_delimited(7, length_delimited(1, varint(10 ** 12))) + \
        length_delimited(5, np.zeros(4, "<f4").tobytes())
    return {
        "truncated": (good[:len(good) // 2], "declares"),
        "10 GB length": (key(100, 2) + varint(10 * 2 ** 30) + b"\x00" * 1000, "declares 10737418240 bytes"),
        "wire type 3": (key(100, 3) + b"\x00" * 10, "unsupported wire type 3"),
        "float data as varint": (length_delimited(100, conv + length_delimited(7, key(5, 0) + varint(7))),
                                 "float data with wire type 0"),
        "absurd blob": (length_delimited(100, conv + length_delimited(7, huge_shape)),
                        "holds 1000000000000 values but 4 are stored"),
        "endless varint": (b"\xff" * 64, "varint longer than 10 bytes"),
        "no layers": (length_delimited(1, b"just a name"), "no layers found"),
        "empty": (b"", "empty file"),
    }


@pytest.mark.parametrize("case", ["truncated", "10 GB length", "wire type 3", "float data as varint",
                                  "absurd blob", "endless varint", "no layers", "empty"])
def test_malformed_files_fail_clearly_and_fast(tmp_path, case):
    data, needle = _bad_files(tmp_path)[case]
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=needle.replace("(", r"\(")):
        read_checkpoint(path)
    assert time.perf_counter() - start < 2.0


def test_cli_reports_a_bad_caffemodel_without_traceback(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.caffemodel"
    path.write_bytes(key(100, 2) + varint(10 * 2 ** 30) + b"\x00" * 100)
    # as a user runs it
    r = subprocess.run([sys.executable, "-m", "fcnfast", "info", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "declares" in r.stderr


# --- the text prototxt ---------------------------------------------------------------------------

# An excerpt of voc-fcn8s/train.prototxt in the layout Caffe's NetSpec writes (data layer, one
# conv with its params, the deconvolutions, the crops, the loss).
VOC_FCN8S_PROTOTXT = r"""
layer {
  name: "data"
  type: "Python"
  top: "data"
  top: "label"
  python_param {
    module: "voc_layers"
    layer: "SBDDSegDataLayer"
    param_str: "{\'sbdd_dir\': \'../data/sbdd/dataset\', \'seed\': 1337, \'split\': \'train\', \'mean\': (104.00699, 116.66877, 122.67892)}"
  }
}
layer {
  name: "conv1_1"
  type: "Convolution"
  bottom: "data"
  top: "conv1_1"
  param {
    lr_mult: 1
    decay_mult: 1
  }
  param {
    lr_mult: 2
    decay_mult: 0
  }
  convolution_param {
    num_output: 64
    pad: 100
    kernel_size: 3
    stride: 1
  }
}
layer {
  name: "relu1_1"
  type: "ReLU"
  bottom: "conv1_1"
  top: "conv1_1"
}
layer {
  name: "upscore2"
  type: "Deconvolution"
  bottom: "score_fr"
  top: "upscore2"
  param {
    lr_mult: 0
  }
  convolution_param {
    num_output: 21
    bias_term: false
    kernel_size: 4
    stride: 2
  }
}
layer {
  name: "score_pool4c"
  type: "Crop"
  bottom: "score_pool4"
  bottom: "upscore2"
  top: "score_pool4c"
  crop_param {
    axis: 2
    offset: 5
  }
}
layer {
  name: "score_pool3c"
  type: "Crop"
  bottom: "score_pool3"
  bottom: "upscore_pool4"
  top: "score_pool3c"
  crop_param {
    axis: 2
    offset: 9
  }
}
layer {
  name: "upscore8"
  type: "Deconvolution"
  bottom: "fuse_pool3"
  top: "upscore8"
  param {
    lr_mult: 0
  }
  convolution_param {
    num_output: 21
    bias_term: false
    kernel_size: 16
    stride: 8
  }
}
layer {
  name: "score"
  type: "Crop"
  bottom: "upscore8"
  bottom: "data"
  top: "score"
  crop_param {
    axis: 2
    offset: 31
  }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "score"
  bottom: "label"
  top: "loss"
  loss_param {
    ignore_label: 255
    normalize: false
  }
}
"""


def test_prototxt_parser_reads_the_release_layout():
    from fcnfast.caffe import check_geometry, parse_prototxt, prototxt_geometry

    net = parse_prototxt(VOC_FCN8S_PROTOTXT)
    assert [layer["name"][0] for layer in net["layer"]][:3] == ["data", "conv1_1", "relu1_1"]
    assert net["layer"][0]["python_param"][0]["param_str"][0].startswith("{'sbdd_dir'")
    geometry = prototxt_geometry(net)
    assert geometry["conv1_1"] == {"type": "Convolution", "kernel": 3, "stride": 1, "pad": 100,
                                   "outputs": 64}
    assert geometry["upscore8"]["kernel"] == 16 and geometry["upscore8"]["stride"] == 8
    assert (geometry["score_pool4c"]["offset"], geometry["score_pool3c"]["offset"],
            geometry["score"]["offset"]) == (5, 9, 31)
    assert net["layer"][-1]["loss_param"][0]["normalize"] == [False]
    check_geometry(build_model("fcn8s", 21), net)  # the reference model has this geometry
    wrong = parse_prototxt(VOC_FCN8S_PROTOTXT.replace("offset: 31", "offset: 30"))
    with pytest.raises(ValueError, match="score: crops upscore8 at 30 in the prototxt, 31"):
        check_geometry(build_model("fcn8s", 21), wrong)
    with pytest.raises(ValueError, match="unclosed"):
        parse_prototxt("layer { name: 'x'")


def test_convert_checks_the_prototxt(tmp_path, run_main):
    src = caffemodel(randomised("fcn8s", **NARROW), tmp_path / "fcn8s.caffemodel")
    good, bad = tmp_path / "train.prototxt", tmp_path / "bad.prototxt"
    good.write_text(VOC_FCN8S_PROTOTXT)
    bad.write_text(VOC_FCN8S_PROTOTXT.replace("kernel_size: 16", "kernel_size: 17"))
    ok = run_main("convert", src, tmp_path / "a.safetensors", "--prototxt", good)
    assert ok.returncode == 0, ok.stderr
    refused = run_main("convert", src, tmp_path / "b.safetensors", "--prototxt", bad)
    err = refused.stderr
    assert refused.returncode == 2 and "upscore8: kernel/stride (17, 8)" in err
    assert "Traceback" not in err and not (tmp_path / "b.safetensors").exists()


def test_pascalcontext_layout_is_a_60_class_fcn8s(tmp_path):
    model = randomised("fcn8s", classes=60, learned=False, **NARROW)
    path = caffemodel(model, tmp_path / "pascalcontext-fcn8s-heavy.caffemodel")
    ckpt = read_checkpoint(path)
    assert ckpt.arch == "fcn8s" and ckpt.num_classes == 60
    for backend in ["torch"] + [b for b in ops.backends() if b != "torch"]:
        seg = fcnfast.load(path, device="cpu", backend=backend)
        if seg.engine is not None:
            report = seg.check(scene(23, 29))  # engine vs reference, on firm pixels
            assert report.ok and report.firm_pixels > 0.5 * report.pixels, (backend, str(report))

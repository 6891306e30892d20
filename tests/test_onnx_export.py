"""ONNX export: the exported files, run with onnxruntime at sizes and batches they were not traced
at, give the reference's labels on firm pixels for every FCN family; errors are clear.

The exports themselves run in the background from the start of the session (conftest.py,
tests/onnx_cases.py); these tests wait for the file each needs."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

import fcnfast  # noqa: E402
from fcnfast.data.synthetic import synthetic_scene  # noqa: E402
from fcnfast.engine.compare import firm_pixels  # noqa: E402
from fcnfast.images import model_scores, to_network_input  # noqa: E402

# (batch, H, W): odd sizes, none the traced example's (67×83)
SIZES = [(2, 97, 131), (1, 301, 457), (1, 500, 500)]
NARROW_VGG = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")  # tests/onnx_cases.py


def wait_for(onnx_exports, name, timeout=900) -> dict:
    """The record the background exporter wrote for ``name`` once it is done."""
    if onnx_exports is None:
        pytest.skip("the ONNX modules are not installed")
    marker = os.path.join(onnx_exports, f"{name}.json")
    deadline = time.monotonic() + timeout
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            pytest.fail(f"the background export of {name} did not finish in {timeout} s")
        time.sleep(0.2)
    with open(marker) as f:
        info = json.load(f)
    if "error" in info:
        pytest.fail(f"export of {name} failed:\n{info['error']}")
    return info


def exported(onnx_exports, case):
    """(onnxruntime session, reference Segmenter, record) of a background-exported case."""
    info = wait_for(onnx_exports, case)
    session = ort.InferenceSession(os.path.join(onnx_exports, f"{case}.onnx"),
                                   providers=["CPUExecutionProvider"])
    seg = fcnfast.load(os.path.join(onnx_exports, f"{case}.safetensors"), device="cpu",
                       backend="torch")
    return session, seg, info


def scenes(n, h, w, seed=0):
    return np.stack([synthetic_scene(seed + i, h, w)[0] for i in range(n)])


def reference(seg, pixels: np.ndarray):
    with torch.inference_mode():
        return model_scores(seg.model, torch.from_numpy(pixels), seg.input_convention)


def assert_firm_equal(labels: np.ndarray, ref: torch.Tensor, what: str, dtype=torch.float32):
    assert labels.shape == tuple(ref.shape[:1] + ref.shape[2:]), (what, labels.shape, ref.shape)
    firm = firm_pixels(ref, dtype)
    assert firm.float().mean() > 0.5, f"{what}: test too weak, most pixels are near ties"
    wrong = (torch.from_numpy(labels.astype(np.int64)) != ref.argmax(1)) & firm
    assert not wrong.any(), f"{what}: {int(wrong.sum())} of {int(firm.sum())} firm pixels differ"


@pytest.mark.parametrize("case", ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "fcn_alexnet",
                                  "fcn_resnet50"])
def test_labels_equal_the_reference_at_every_size(onnx_exports, case):
    session, seg, info = exported(onnx_exports, case)
    assert info["model_left_alone"]  # still in training mode, weights untouched
    assert [i.name for i in session.get_inputs()] == ["frames"] == info["inputs"]
    assert [o.name for o in session.get_outputs()] == ["labels"]
    # N, H, W are symbolic in the file, not the example's numbers
    assert all(isinstance(d, str) for d in session.get_inputs()[0].shape[:3])
    # the full-width nets skip the largest size: the narrow VGGs cover it, at a fraction of the time
    for n, h, w in SIZES if case in NARROW_VGG else SIZES[:2]:
        frames = scenes(n, h, w, seed=h)
        (labels,) = session.run(None, {"frames": frames})
        assert labels.dtype == np.uint8
        assert_firm_equal(labels, reference(seg, frames), f"{case} at {n}×{h}×{w}")


def test_every_head_of_siftflow(onnx_exports):
    session, seg, _ = exported(onnx_exports, "siftflow_fcn8s")
    assert [o.name for o in session.get_outputs()] == ["labels_semantic", "labels_geometric"]
    for n, h, w in SIZES[:2]:
        frames = scenes(n, h, w)
        outs = session.run(None, {"frames": frames})
        ref = reference(seg, frames)
        for labels, head in zip(outs, ("semantic", "geometric")):
            assert_firm_equal(labels, ref[head], f"{head} head at {n}×{h}×{w}")


def test_colour_and_hha_inputs(onnx_exports):
    session, seg, _ = exported(onnx_exports, "nyud_fcn32s_color_hha")
    assert [i.name for i in session.get_inputs()] == ["frames", "hha"]
    for n, h, w in SIZES[:2]:
        rgb, hha = scenes(n, h, w), scenes(n, h, w, seed=50)
        (labels,) = session.run(None, {"frames": rgb, "hha": hha})
        assert_firm_equal(labels, reference(seg, np.concatenate([rgb, hha], -1)),
                          f"colour + HHA at {n}×{h}×{w}")


def test_float_input_and_full_resolution_scores(onnx_exports):
    session, seg, _ = exported(onnx_exports, "fcn8s_float_scores")
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == ["scores"]
    for n, h, w in SIZES[:2]:
        frames = scenes(n, h, w)
        x = to_network_input(torch.from_numpy(frames), seg.input_convention, "cpu", torch.float32)
        (scores,) = session.run(None, {"x": x.numpy()})
        ref = reference(seg, frames)
        scale = float(ref.abs().max())
        np.testing.assert_allclose(scores, ref.numpy(), rtol=1e-4, atol=1e-5 * scale)


def test_float16_graph(onnx_exports):
    import onnx

    wait_for(onnx_exports, "fcn8s_float16")
    path = os.path.join(onnx_exports, "fcn8s_float16.onnx")
    model = onnx.load(path)
    weights = [t for t in model.graph.initializer if t.name.startswith("model.")]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - a CPU provider without float16 kernels
        assert "NOT_IMPLEMENTED" in str(e) or "not implemented" in str(e).lower(), e
        return
    seg = fcnfast.load(path.replace(".onnx", ".safetensors"), device="cpu", backend="torch")
    frames = scenes(2, 97, 131)
    (labels,) = session.run(None, {"frames": frames})
    assert_firm_equal(labels, reference(seg, frames), "float16 graph", torch.float16)


def test_static_export_is_fixed_to_its_size(onnx_exports):
    session, seg, _ = exported(onnx_exports, "fcn8s_static")
    assert session.get_inputs()[0].shape == [2, 97, 131, 3]
    frames = scenes(2, 97, 131)
    (labels,) = session.run(None, {"frames": frames})
    assert_firm_equal(labels, reference(seg, frames), "static export")
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"frames": scenes(1, 97, 131)})


def test_cli_exports_and_verifies_the_default_model(onnx_exports):
    run = wait_for(onnx_exports, "cli")
    assert run["returncode"] == 0, run["stderr"]
    assert "verified with onnxruntime" in run["stdout"] and "firm pixels" in run["stdout"]
    assert "Traceback" not in run["stderr"]
    session = ort.InferenceSession(os.path.join(onnx_exports, "cli.onnx"),
                                   providers=["CPUExecutionProvider"])
    seg = fcnfast.load("default", device="cpu", backend="torch")
    frames = scenes(2, 121, 143)
    (labels,) = session.run(None, {"frames": frames})
    assert_firm_equal(labels, reference(seg, frames), "fcnfast export default")


def test_cli_errors_without_traceback(tmp_path, run_main):
    cases = [
        (["export", "default", str(tmp_path / "model.txt")], "must end in .onnx"),
        (["export", str(tmp_path / "missing.pt"), str(tmp_path / "m.onnx")], "missing.pt"),
        (["export", "default", str(tmp_path / "m.onnx"), "--static", "0x5"], "--size must be positive"),
    ]
    for argv, message in cases:
        r = run_main(*argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
    # as a user runs it
    proc = subprocess.run([sys.executable, "-m", "fcnfast", *cases[0][0]], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and cases[0][1] in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_bad_arguments_are_named():
    model = fcnfast.models.build_model("fcn32s", 3, widths=(4, 4, 4, 4, 4), fc_width=8)
    bad = [(dict(input="rgb"), ValueError, "input must be"),
           (dict(output="probs"), ValueError, "output must be"),
           (dict(dtype=torch.bfloat16), TypeError, "float32 or torch.float16"),
           (dict(dynamic=False), ValueError, "give size"),
           (dict(size=(0, 4)), ValueError, "size must be positive"),
           (dict(opset=7), ValueError, "opset")]
    for kwargs, exc, message in bad:
        with pytest.raises(exc, match=message):
            fcnfast.export_onnx(model, "out.onnx", **kwargs)
    with pytest.raises(ValueError, match="end in .onnx"):
        fcnfast.export_onnx(model, "out.pt")
    with pytest.raises(TypeError, match="model must be"):
        fcnfast.export_onnx(42, "out.onnx")
    assert not os.path.exists("out.onnx")

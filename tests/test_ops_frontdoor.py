"""fcnfast.ops: backend choice, the reference against the model it stands in for, path detection."""
import os
import pytest
import torch

import fcnfast.ops as ops
from fcnfast import contract
from fcnfast import _ext
from fcnfast.models import build_model
from fcnfast.models.init import bilinear_weight

from op_testing import assert_rel_close


def test_backends_listing():
    """Every backend listed runs an op and equals the reference on some device here; every one
    not listed is refused on every device, saying why."""
    got = ops.backends()
    assert got[0] == "torch" and set(got) <= set(ops.BACKENDS)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    frames = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    want = ops.preprocess(frames, mean=(1.0, 2.0, 3.0), backend="torch")
    for backend in ops.BACKENDS:
        ran = False
        for device in devices:
            try:
                y = ops.preprocess(frames.to(device), mean=(1.0, 2.0, 3.0), backend=backend)
            except RuntimeError as e:
                assert f"backend {backend!r} cannot run here" in str(e)
                continue
            torch.testing.assert_close(y.cpu(), want)
            ran = True
        assert ran == (backend in got), f"{backend}: listed {backend in got}, ran {ran}"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = _ext.triton_status("cpu")
    if _ext._triton_import_error():
        pytest.skip("triton not importable")
    assert not ok and "TRITON_INTERPRET=1" in why
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _ext.triton_status("cpu") == (True, "")


def test_named_backend_never_falls_back():
    x = torch.randn(1, 3, 4, 4)
    w = bilinear_weight(3, 3, 4)
    # CPU tensors: refused with or without a GPU.
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot run here"):
        ops.upsample_crop_add(x, w, 2, backend="cuda")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        ops.upsample_crop_add(x, w, 2, backend="fast")
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        ops.interp_argmax(x.numpy(), (4, 4))


def test_auto_picks_a_compiled_backend_on_cpu():
    """auto on CPU: the C++ kernels when built, else the reference (Triton on CPU tensors is its
    slow interpreter, never chosen by auto)."""
    want = "cpp" if _ext.has_cpp_ops() else "torch"
    assert ops.candidates("upsample_crop_argmax", "auto", torch.device("cpu"))[0] == want
    x = torch.randn(1, 3, 4, 4)
    w = bilinear_weight(3, 3, 4)
    torch.testing.assert_close(ops.upsample_crop_add(x, w, 2),
                               ops.upsample_crop_add(x, w, 2, backend="torch"))


def _heads(m, x):
    pool3, pool4, h = m.trunk(x)
    return pool3, pool4, h


@pytest.mark.parametrize("arch", ["fcn8s", "fcn8s_atonce"])
def test_reference_ops_compose_to_fcn8s(arch):
    """FCN-8s's head written with the ops equals the model: the ops are the contract the engine
    builds on."""
    torch.manual_seed(0)
    m = build_model(arch, 5).eval()
    with torch.no_grad():
        for layer in (m.score_fr, m.score_pool4, m.score_pool3):
            layer.weight.normal_(0, 0.05)
            layer.bias.normal_(0, 0.05)
        m.upscore2.weight.normal_(0, 0.3)  # learned 2× layer: the general path
        x = torch.randn(1, 3, 45, 61) * 50
        want = m(x)
        pool3, pool4, h = _heads(m, x)
        off = m.crop_offsets
        up = ops.upsample_crop_add(h, m.upscore2.weight, 2, pool4, skip_offset=off["score_pool4"],
                                   skip_weight=m.score_pool4.weight, skip_bias=m.score_pool4.bias,
                                   skip_scale=m.pool4_scale, backend="torch")
        up = ops.upsample_crop_add(up, m.upscore_pool4.weight, 2, pool3,
                                   skip_offset=off["score_pool3"], skip_weight=m.score_pool3.weight,
                                   skip_bias=m.score_pool3.bias, skip_scale=m.pool3_scale,
                                   backend="torch")
        labels, scores = ops.upsample_crop_argmax(up, m.upscore8.weight, 8, off["upscore8"],
                                                  x.shape[-2:], return_scores=True, backend="torch")
    assert_rel_close(scores[0], want[0].max(0).values, 1e-5, "winning scores")
    assert (labels[0].long() == want[0].argmax(0)).float().mean() > 0.999


def test_bilinear_filter_exact_detection():
    w = bilinear_weight(4, 4, 16)
    f = ops.bilinear_filter(w)
    assert f is not None and f.shape == (16, 16) and f.dtype == torch.float32
    torch.testing.assert_close(f, w[2, 2])
    assert ops.bilinear_filter(w.half()) is not None  # exact in the weight's own dtype
    off = w.clone()
    off[0, 1, 3, 3] = 1e-7
    assert ops.bilinear_filter(off) is None
    scaled = w.clone()
    scaled[3, 3] *= 1.0001
    assert ops.bilinear_filter(scaled) is None
    assert ops.bilinear_filter(torch.randn(4, 4, 16, 16)) is None
    # Cached per tensor version: an in-place edit is seen.
    live = bilinear_weight(3, 3, 4)
    assert ops.bilinear_filter(live) is not None
    with torch.no_grad():
        live[0, 2, 0, 0] = 0.5
    assert ops.bilinear_filter(live) is None


def test_reference_float64_and_geometry_beyond_kernels():
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    w = torch.randn(2, 2, 7, 7, dtype=torch.float64)  # k > 2s: reference only
    y = ops.upsample_crop_add(x, w, 2, backend="torch")
    assert y.dtype == torch.float64 and y.shape == (1, 2, 11, 11)
    with pytest.raises(ValueError, match="k <= 2\\*stride"):
        contract.check_upsample_crop_argmax(x.float(), w.float(), 2, 0, (3, 3), kernel=True)


def test_ops_trace_under_torch_compile():
    """A compiled function calling fcnfast.ops traces the custom ops in one graph (no break) and
    gives the eager result."""
    torch._dynamo.reset()
    x = torch.randn(1, 3, 5, 6)
    w = bilinear_weight(3, 3, 4)
    skip = torch.randn(1, 3, 20, 20)
    frames = torch.randint(0, 256, (1, 7, 9, 3), dtype=torch.uint8)

    def head(x, skip, frames):
        y = ops.upsample_crop_add(x, w, 2, skip, skip_offset=2, backend="torch")
        labels, scores = ops.upsample_crop_argmax(y, w, 2, 1, (9, 11), return_scores=True,
                                                  backend="torch")
        lab2 = ops.interp_argmax(y, (13, 17), backend="torch")
        pre = ops.preprocess(frames, mean=(1.0, 2.0, 3.0), bgr=True, backend="torch")
        return y, labels, scores, lab2, pre

    compiled = torch.compile(head, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(x, skip, frames), head(x, skip, frames)):
        torch.testing.assert_close(got, want)


def test_without_triton_everything_else_runs(tmp_path):
    """triton is an optional extra: with it missing, fcnfast imports, lists no triton backend,
    refuses backend='triton' with the install hint, and "auto" and the engine run on the rest."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["triton"] = None  # import triton now fails as if it were not installed
import torch, fcnfast
from fcnfast import ops
assert "triton" not in ops.backends(), ops.backends()
x = torch.randn(1, 3, 5, 5)
from fcnfast.models.init import bilinear_weight
w = bilinear_weight(3, 3, 4)
try:
    ops.upsample_crop_argmax(x, w, 2, 1, (9, 9), backend="triton")
except RuntimeError as e:
    assert "pip install 'fcnfast[triton]'" in str(e), e
else:
    raise AssertionError("backend='triton' ran without triton")
ref = ops.upsample_crop_argmax(x, w, 2, 1, (9, 9), backend="torch")
assert torch.equal(ops.upsample_crop_argmax(x, w, 2, 1, (9, 9)), ref)
seg = fcnfast.load(device="cpu")
assert "triton" not in seg.op_backends.values()
assert seg.check().ok
print("ok")
"""
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]

"""Every Triton head kernel compiles for a Hopper GPU (sm_90), here without one, in the
specialisations the launchers choose on a GPU (tests/triton_sm90.py); the half-precision learned
paths of upsample_crop_add multiply on tensor cores, the float32 ones in IEEE float32."""
import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this Triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path_factory.mktemp("triton-cache")),
               TRITON_DEFAULT_FP_FUSION="1")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "triton_sm90.py")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [d for d in lines if "kernel" in d], lines[-1]["every_kernel"]


def test_every_kernel_compiles_for_sm90(compiled):
    kernels, every = compiled
    assert len(every) >= 7, every
    missing = sorted(set(every) - {d["kernel"] for d in kernels})
    assert not missing, f"never compiled: {missing}"
    blocks = {d["constexprs"]["ONE_BLOCK"] for d in kernels if d["kernel"] == "_interp_argmax_kernel"}
    assert blocks == {True, False}, "interp_argmax: both the shared-row and the class-block path"


def test_half_precision_learned_paths_use_tensor_cores(compiled):
    kernels, _ = compiled
    learned = [d for d in kernels
               if d["kernel"] == "_upsample_crop_add_kernel" and not d["constexprs"]["BILINEAR"]]
    half = [d for d in learned if d["constexprs"]["DOT"] == 1]
    assert {d["constexprs"]["SKIP"] for d in half} == {1, 2}  # skip scores; fused 1x1 scoring
    for d in half:
        assert any(op.startswith(("mma.", "wgmma.")) for op in d["mma"]), d
        if d["constexprs"]["SKIP"] == 2:
            assert d["constexprs"]["SKIP_DOT"] == 1, d
    assert {dt for d in half for op in d["mma"] for dt in ("f16", "bf16") if f".{dt}.{dt}." in op} \
        == {"f16", "bf16"}
    float32 = [d for d in learned if d["constexprs"]["DOT"] == 0]
    assert float32 and all(not d["mma"] for d in float32), "float32 must stay IEEE (no mma)"

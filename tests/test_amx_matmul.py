"""amx_matmul: bfloat16 1×1 layers on the AMX tile unit (csrc/cpu/amx_matmul.cpp,
fcnfast/engine/amx.py) against float64 products of the same bfloat16 inputs — awkward row counts
(1, primes, past a 32-row block), channels in and out off the 64 multiples, strided rows, the
residual apart and in place, poisoned outputs with guard rows and columns — and the engine's use of
it. Skipped where this CPU or its OS cannot run AMX (the status query and the errors are not)."""
import pytest
import torch

from fcnfast import ops
from fcnfast.engine import Engine
from fcnfast.engine.amx import AmxConv2d, eligible
from fcnfast.engine.layers import PackedConv2d
from fcnfast.models import build_model

AMX, WHY = ops.amx_status()
needs_amx = pytest.mark.skipif(not AMX, reason=f"amx_matmul cannot run here: {WHY}")


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """One bfloat16 unit in the last place at |x| (8 significant bits)."""
    e = torch.floor(torch.log2(x.abs().clamp_min(1e-30)))
    return torch.exp2(e - 7)


def expected(a, w, bias, residual, relu):
    y = a.double() @ w.double().T
    if bias is not None:
        y = y + bias.double()
    if residual is not None:
        y = y + residual.double()
    return y.relu() if relu else y


def test_status_says_why_not():
    ok, why = ops.amx_status()
    assert isinstance(ok, bool) and isinstance(why, str)
    assert ok == (why == "")
    assert ops.amx_available() == ok


@needs_amx
@pytest.mark.parametrize("m,k,n", [(1, 32, 32), (31, 64, 96), (33, 96, 64), (97, 160, 224),
                                   (257, 1024, 64), (1000, 64, 1056)])
@pytest.mark.parametrize("bias,relu,residual", [(True, True, "apart"), (False, False, None),
                                                (True, False, "in_place"), (True, True, None)])
def test_matches_the_float64_product(m, k, n, bias, relu, residual):
    g = torch.Generator().manual_seed(m * 7 + k + n)
    # strided rows: a K-column view of a wider matrix; out a view with guard rows and columns
    a_wide = torch.randn(m, k + 32, generator=g).bfloat16()
    a = a_wide[:, 16:16 + k]
    w = (torch.randn(n, k, generator=g) / k ** 0.5).bfloat16()
    b = torch.randn(n, generator=g) if bias else None
    res = torch.randn(m, n, generator=g).bfloat16() if residual else None
    want = expected(a, w, b, res, relu)
    arena = torch.full((m + 3, n + 32), float("nan"), dtype=torch.bfloat16)
    out = arena[1:m + 1, 16:16 + n]
    if residual == "in_place":
        out.copy_(res)
        res = out
    got = ops.amx_matmul(a, ops.amx_pack_weight(w), b, relu, res, out)
    assert got.data_ptr() == out.data_ptr()
    err = (got.double() - want).abs()
    # float32 sums of bfloat16 products, rounded once: within one bfloat16 unit of the exact value
    bound = bf16_ulp(want.float()).double() + 1e-6 * want.abs().max()
    bad = err > bound
    assert not bad.any(), (f"{int(bad.sum())} of {bad.numel()} outside one bf16 ulp, first at "
                           f"{bad.nonzero()[0].tolist()}: got {got[tuple(bad.nonzero()[0])]}, "
                           f"want {want[tuple(bad.nonzero()[0])]}")
    # nothing written outside out
    assert arena[0].isnan().all() and arena[m + 1:].isnan().all()
    assert arena[:, :16].isnan().all() and arena[:, 16 + n:].isnan().all()


@needs_amx
@pytest.mark.parametrize("b,m,k,n", [(16, 37, 64, 96), (3, 1, 32, 32), (2, 65, 128, 1088)])
def test_a_stack_runs_every_product(b, m, k, n):
    """(B, M, K) · (B, N, K)ᵀ in one call: each product its own weight (a Winograd layer's tile
    points), rows of a padded buffer (more rows than used), out poisoned past them."""
    g = torch.Generator().manual_seed(b + m + k + n)
    a = torch.randn(b, m + 5, k, generator=g).bfloat16()[:, :m]
    w = (torch.randn(b, n, k, generator=g) / k ** 0.5).bfloat16()
    bias = torch.randn(n, generator=g)
    arena = torch.full((b, m + 2, n), float("nan"), dtype=torch.bfloat16)
    got = ops.amx_matmul(a, ops.amx_pack_weight(w), bias, True, out=arena[:, :m])
    want = torch.relu(torch.bmm(a.double(), w.double().transpose(1, 2)) + bias.double())
    assert ((got.double() - want).abs() <= bf16_ulp(want.float()).double() + 1e-6 * want.abs().max()).all()
    assert arena[:, m:].isnan().all()
    with pytest.raises(ValueError, match="no residual"):
        ops.amx_matmul(a, ops.amx_pack_weight(w), residual=arena[0, :m], out=arena[:, :m])
    with pytest.raises(ValueError, match="matrices"):
        ops.amx_matmul(a[:1], ops.amx_pack_weight(w))


@needs_amx
def test_the_engines_1x1_layers_agree_with_onednn():
    """A 1×1 layer as AmxConv2d gives oneDNN's convolution's outputs to bfloat16's rounding, for
    a plain, a fused-ReLU and a block-end (add + ReLU in place) call; over a channels-last map with
    one pixel too."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(96, 64, 1).bfloat16()
    for relu in (False, True):
        packed = PackedConv2d(conv, relu)
        assert eligible(packed)
        amx = AmxConv2d(PackedConv2d(conv, relu))
        for shape in ((1, 96, 1, 1), (2, 96, 7, 13)):
            x = torch.randn(shape).bfloat16().contiguous(memory_format=torch.channels_last)
            want = packed(x).float()
            got = amx(x)
            assert got.is_contiguous(memory_format=torch.channels_last) and got.shape == want.shape
            torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
            other = torch.randn(shape[0], 64, *shape[2:]).bfloat16()
            other = other.contiguous(memory_format=torch.channels_last)
            want_sum = packed.add_relu_(x, other.clone()).float()
            back = amx.add_relu_(x, other)
            assert back.data_ptr() == other.data_ptr()  # in place
            torch.testing.assert_close(back.float(), want_sum, rtol=1e-2, atol=1e-2)


@needs_amx
def test_engine_runs_a_resnet_s_1x1_layers_on_it_and_keeps_the_labels():
    torch.manual_seed(0)
    model = build_model("fcn_resnet50", 5).eval()
    with torch.no_grad():
        model.classifier[4].weight.normal_(0, 0.02)
    pixels = torch.randint(0, 256, (1, 45, 61, 3), dtype=torch.uint8)
    on = Engine(model, torch.device("cpu"), torch.bfloat16)
    off = Engine(model, torch.device("cpu"), torch.bfloat16, amx=False)
    # layer1–4's conv1 and conv3 and the 64→256 downsample (stride 1): every stride-1 1×1 layer;
    # the head's 512→5 has too few channels out
    assert on.amx_layers == 35 and off.amx_layers == 0
    assert sum(isinstance(m, AmxConv2d) for m in on.net.modules()) == 35
    labels_on, scores_on = on.run(pixels, return_scores=True)
    labels_off, scores_off = off.run(pixels, return_scores=True)
    assert (labels_on == labels_off).float().mean() >= 0.99  # bf16 near-ties apart
    spread = float(scores_off.float().abs().max())
    assert float((scores_on.float() - scores_off.float()).abs().max()) <= 0.05 * spread
    # a second size: no kernel is made per shape
    other = torch.randint(0, 256, (1, 37, 50, 3), dtype=torch.uint8)
    assert (on.run(other) == off.run(other)).float().mean() >= 0.99


def test_errors_name_the_problem():
    if not AMX:
        with pytest.raises(RuntimeError, match="cannot run here"):
            ops.amx_pack_weight(torch.zeros(32, 32, dtype=torch.bfloat16))
        with pytest.raises(ValueError, match="amx=True"):
            Engine(build_model("fcn_resnet50", 5).eval(), torch.device("cpu"), torch.bfloat16, amx=True)
        return
    with pytest.raises(ValueError, match="multiples of 32"):
        ops.amx_pack_weight(torch.zeros(32, 48, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="bfloat16"):
        ops.amx_pack_weight(torch.zeros(32, 32))
    p = ops.amx_pack_weight(torch.zeros(64, 32, dtype=torch.bfloat16))
    a = torch.zeros(5, 32, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="columns"):
        ops.amx_matmul(torch.zeros(5, 64, dtype=torch.bfloat16), p)
    with pytest.raises(ValueError, match="bfloat16"):
        ops.amx_matmul(torch.zeros(5, 32), p)
    with pytest.raises(ValueError, match="rows"):
        ops.amx_matmul(a, p, out=torch.zeros(4, 64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="bias"):
        ops.amx_matmul(a, p, torch.zeros(64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="contiguous"):
        ops.amx_matmul(torch.zeros(32, 5, dtype=torch.bfloat16).T, p)
    with pytest.raises(ValueError, match="amx=True"):
        Engine(build_model("fcn_resnet50", 5).eval(), torch.device("cpu"), torch.float32, amx=True)
    assert ops.amx_matmul(torch.zeros(0, 32, dtype=torch.bfloat16), p).shape == (0, 64)


@needs_amx
def test_a_lower_cpu_level_asked_for_rules_it_out():
    """FCNFAST_CPU_CAPABILITY=avx2 runs the module as an AVX2-only CPU would: no AMX either, and
    the engine's default then keeps oneDNN's 1×1 convolutions."""
    import os
    import subprocess
    import sys

    code = ("import torch; from fcnfast import ops; from fcnfast.engine import Engine; "
            "from fcnfast.models import build_model; ok, why = ops.amx_status(); "
            "e = Engine(build_model('fcn_resnet50', 5).eval(), torch.device('cpu'), torch.bfloat16); "
            "print(ok, e.amx_layers, why)")
    env = dict(os.environ, FCNFAST_CPU_CAPABILITY="avx2")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("False 0 FCNFAST_CPU_CAPABILITY chose avx2"), r.stdout

"""Winograd F(2×2, 3×3) and F(4×4, 3×3) convolutions (fcnfast/engine/winograd.py,
csrc/cpu/winograd.cpp) against the float64 convolution: awkward sizes, dilations 1/2/4, padding d
and 0, both dtypes, both tiles; and the engine's use of them (ResNet by default, never the
border-skipping chains)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnfast.ops import native
from fcnfast.engine import Engine
from fcnfast.engine.layers import PackedConv2d
from fcnfast.engine.winograd import (GROUPED_MIN_CHANNELS, WinogradConv2d, available, eligible,
                                     fusable, tile_for, use_winograd)
from fcnfast.models import build_model

pytestmark = pytest.mark.skipif(not available(), reason="fcnfast._C with the Winograd kernels is not built")

# Max error relative to the output's largest magnitude, by (dtype, tile): float32 near its
# rounding (F(4×4) about 10× F(2×2)'s, its transforms have larger coefficients); bf16 about 2× the
# direct convolution's with F(2×2) (products rounded once more before the output transform), 5×
# more with F(4×4), which is why bfloat16 layers keep F(2×2).
TOL = {(torch.float32, 2): 2e-6, (torch.float32, 4): 2e-5,
       (torch.bfloat16, 2): 1.5e-2, (torch.bfloat16, 4): 6e-2}


def layer(c, k, d, relu, dtype, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, k, 3, padding=d, dilation=d)
    with torch.no_grad():
        conv.bias.normal_(0, 0.5)
    return conv.to(dtype), PackedConv2d(conv.to(dtype), relu)


def resnet_and_pixels(seed=0):
    """A random FCN-ResNet50 whose head scores spread (labels that are not all one class) and a
    45×61 image."""
    torch.manual_seed(seed)
    model = build_model("fcn_resnet50", 5).eval()
    with torch.no_grad():
        model.classifier[4].weight.normal_(0, 0.02)
    return model, torch.randint(0, 256, (1, 45, 61, 3), dtype=torch.uint8)


def reference(conv, x, pad, d, relu):
    y = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=pad, dilation=d)
    return y.relu() if relu else y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,c,k,h,w,d,relu", [
    (1, 128, 128, 1, 1, 1, True),     # one pixel: every tap but the centre is padding
    (2, 130, 129, 7, 5, 2, False),    # channels off the 64-channel block, batch 2
    (1, 131, 128, 13, 3, 4, True),    # dilation 4 wider than the map
    (1, 192, 200, 11, 17, 1, True),   # primes: tiles that end past the edge
    (1, 256, 260, 9, 7, 2, True),     # wide enough for the grouped 1×1 convolution's products
    (2, 257, 256, 5, 6, 1, False),
])
@pytest.mark.parametrize("products", ["batched", "grouped", "fused"])
@pytest.mark.parametrize("tile", [2, 4])
def test_matches_the_float64_convolution(dtype, n, c, k, h, w, d, relu, products, tile):
    conv, packed = layer(c, k, d, relu, dtype)
    if products == "grouped" and min(c, k) < GROUPED_MIN_CHANNELS:
        with pytest.raises(ValueError, match="grouped products need"):
            WinogradConv2d(packed, grouped=True, tile=tile)
        return
    if products == "fused" and not fusable(c, k, dtype, tile):
        with pytest.raises(ValueError, match="one-pass"):
            WinogradConv2d(packed, fused=True, tile=tile)
        return
    wino = (WinogradConv2d(packed, fused=True, tile=tile) if products == "fused" else
            WinogradConv2d(packed, grouped=products == "grouped", tile=tile))
    assert (wino.fused is not None) == (products == "fused")
    x = torch.randn(n, c, h, w).to(dtype).contiguous(memory_format=torch.channels_last)
    for pad, run in ((d, wino.forward), (0, wino.forward_unpadded)):
        if pad == 0 and min(h, w) <= 2 * d:
            continue
        ref = reference(conv, x, pad, d, relu)
        y = run(x)
        assert y.shape == ref.shape and y.dtype == dtype
        assert y.is_contiguous(memory_format=torch.channels_last)
        err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
        assert err < TOL[dtype, tile], (pad, err)


def test_each_dtype_gets_its_tile():
    """float32 layers take F(4×4, 3×3), bfloat16 ones F(2×2, 3×3), unless told."""
    assert tile_for(torch.float32) == 4 and tile_for(torch.bfloat16) == 2
    for dtype, tile, points in ((torch.float32, 4, 36), (torch.bfloat16, 2, 16)):
        wino = WinogradConv2d(layer(128, 128, 1, True, dtype)[1], fused=False)
        assert (wino.tile, wino.points, wino.u.shape[0]) == (tile, points, points)
    assert WinogradConv2d(layer(128, 128, 1, True, torch.float32)[1], tile=2).u.shape[0] == 16


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("by_point", [True, False], ids=["by-point", "by-tile"])
def test_transforms_write_every_value_and_nothing_past_the_edge(by_point, tile):
    """Into NaN-poisoned buffers, in either layout ((P, tiles, C) or (tiles, P, C)); the
    output's with a guard band after it."""
    n, c, k, h, w, d = 1, 128, 128, 5, 7, 2
    conv, packed = layer(c, k, d, False, torch.float32, seed=3)
    wino = WinogradConv2d(packed, tile=tile)
    x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
    ref = reference(conv, x, d, d, False)
    tiles, points = native.winograd_tiles(n, h, w, d, d, tile), native.winograd_points(tile)
    v = torch.full((points, tiles, c) if by_point else (tiles, points, c), float("nan"))
    assert not native.winograd_input(x, d, d, v, by_point, tile).isnan().any()
    m = torch.bmm(v if by_point else v.transpose(0, 1), wino.u)
    if not by_point:
        m = m.transpose(0, 1).contiguous()
    buf = torch.full((n * h * w * k + 1000,), float("nan"))
    y = buf[:n * h * w * k].view(n, h, w, k).permute(0, 3, 1, 2)  # channels-last view
    native.winograd_output(m, wino.bias, False, (h, w), d, d, y, by_point, tile)
    assert buf[n * h * w * k:].isnan().all()
    torch.testing.assert_close(y.double(), ref, rtol=0,
                               atol=TOL[torch.float32, tile] * ref.abs().max().item())


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_every_tile_holds_outputs(d, tile):
    """No empty tiles (they would be GEMM rows of zeros): a phase with fewer outputs gets fewer
    tiles. The count is that of the distinct tile×tile groups of each phase's outputs."""
    for oh, ow in [(1, 1), (2, 3), (38, 57), (19, 29), (7, 13), (d, 2 * d + 1), (4 * d + 1, 5)]:
        groups = {(y // (tile * d), y % d, x // (tile * d), x % d) for y in range(oh) for x in range(ow)}
        assert native.winograd_tiles(2, oh, ow, d, d, tile) == 2 * len(groups), (oh, ow)


def test_a_tile_count_met_first_rounds_coarser_then_exact(monkeypatch):
    """A tile count met for the first time (a new image size) runs its GEMM on rows rounded to
    ``new_size_rows`` (shared with other sizes), one met again on ``gemm_rows``; the output is
    the convolution's either way, the padding rows never reaching it."""
    from fcnfast.engine import winograd

    conv, packed = layer(128, 128, 1, True, torch.float32, seed=9)
    wino = WinogradConv2d(packed, grouped=False, tile=2, direct_when_met=False)
    seen = []
    real_bmm = torch.bmm

    def bmm(v, u, out=None):
        seen.append(v.shape[1])
        return real_bmm(v, u, out=out)

    monkeypatch.setattr(winograd.torch, "bmm", bmm)
    x = torch.randn(1, 128, 45, 25).contiguous(memory_format=torch.channels_last)
    tiles = native.winograd_tiles(1, 45, 25, 1, 1, 2)  # 23 × 13 = 299: 320 rows first, 304 then
    want = reference(conv, x, 1, 1, True)
    for _ in range(2):
        torch.testing.assert_close(wino(x).double(), want, rtol=0,
                                   atol=TOL[torch.float32, 2] * want.abs().max().item())
    assert seen == [winograd.new_size_rows(tiles), winograd.gemm_rows(tiles)]
    assert seen == [320, 304]
    # an eighth of the count at most, never fewer rows than tiles
    for t in [1, 16, 17, 100, 511, 512, 513, 2200, 5000]:
        rows = winograd.new_size_rows(t)
        assert t <= rows <= max(t + winograd.ROW_STEP - 1, t * 9 // 8 + 1)
        assert rows % winograd.ROW_STEP == 0 and winograd.gemm_rows(t) <= rows


def test_buffers_with_more_rows_than_tiles():
    """The rows past the tiles are neither written nor read: poisoned, they stay poisoned and the
    output is the one of exact-size buffers."""
    n, c, k, h, w, d = 1, 128, 130, 9, 6, 2
    conv, packed = layer(c, k, d, True, torch.float32, seed=4)
    wino = WinogradConv2d(packed, tile=2)
    x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
    tiles = native.winograd_tiles(n, h, w, d, d)
    v = torch.full((16, tiles + 37, c), float("nan"))
    native.winograd_input(x, d, d, v)
    assert not v[:, :tiles].isnan().any() and v[:, tiles:].isnan().all()
    m = torch.full((16, tiles + 37, k), float("nan"))
    m[:, :tiles] = torch.bmm(v[:, :tiles], wino.u)
    y = torch.empty(n, k, h, w).contiguous(memory_format=torch.channels_last)
    native.winograd_output(m, wino.bias, True, (h, w), d, d, y)
    torch.testing.assert_close(y.double(), reference(conv, x, d, d, True), rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="rows ≥"):
        native.winograd_input(x, d, d, v[:, :tiles - 1])


@pytest.mark.parametrize("tile,big,small", [(2, (14, 16), (13, 13)), (4, (20, 24), (17, 17))])
def test_sizes_that_share_a_workspace_do_not_see_each_others_tiles(tile, big, small):
    """Two sizes whose tiles round to the same GEMM rows: the smaller, after the larger, is right."""
    from fcnfast.engine.winograd import gemm_rows

    conv, packed = layer(128, 128, 1, False, torch.float32, seed=6)
    wino = WinogradConv2d(packed, tile=tile)
    big, small = (torch.randn(1, 128, *hw).contiguous(memory_format=torch.channels_last)
                  for hw in (big, small))
    t_big, t_small = (native.winograd_tiles(1, *x.shape[2:], 1, 1, tile) for x in (big, small))
    assert t_small < t_big and gemm_rows(t_small) == gemm_rows(t_big)
    wino(big)
    ref = reference(conv, small, 1, 1, False)
    torch.testing.assert_close(wino(small).double(), ref, rtol=0,
                               atol=TOL[torch.float32, tile] * ref.abs().max().item())


def test_transforms_reject_what_they_cannot_take():
    x = torch.randn(1, 128, 6, 6).contiguous(memory_format=torch.channels_last)
    v = torch.empty(16, native.winograd_tiles(1, 6, 6, 1, 1), 128)
    with pytest.raises(ValueError, match="channels-last"):
        native.winograd_input(x.contiguous(), 1, 1, v)
    with pytest.raises(ValueError, match="expected"):
        native.winograd_input(x, 2, 2, v)  # v sized for dilation 1
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        native.winograd_input(x.half(), 1, 1, v)
    with pytest.raises(ValueError, match="too small"):
        native.winograd_tiles(1, 3, 3, 4, 0)
    with pytest.raises(ValueError, match="tile must be one of"):
        native.winograd_input(x, 1, 1, v, True, 3)
    with pytest.raises(ValueError, match=r"expected \(36, "):
        native.winograd_input(x, 1, 1, v, True, 4)  # v has 16 points, F(4×4) wants 36
    y = torch.empty(1, 128, 5, 6).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="the convolution of 6×6 gives 6×6"):
        native.winograd_output(torch.empty(16, v.shape[1], 128), torch.zeros(128), True, (6, 6), 1, 1, y)


def test_eligibility():
    assert eligible(layer(128, 128, 2, True, torch.float32)[1])
    assert not eligible(layer(64, 128, 1, True, torch.float32)[1])  # too narrow to pay
    assert not eligible(PackedConv2d(nn.Conv2d(128, 128, 3, stride=2, padding=1), True))
    assert not eligible(PackedConv2d(nn.Conv2d(128, 128, 3, padding=100), True))  # not 'same'
    assert not eligible(PackedConv2d(nn.Conv2d(128, 128, 3, padding=1).half(), True))
    with pytest.raises(ValueError, match="not a Winograd-eligible"):
        WinogradConv2d(PackedConv2d(nn.Conv2d(128, 128, 1), True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_grouped_layer_runs_winograd_group_by_group(dtype):
    """AlexNet's conv4-like layer (two groups of 192): one Winograd layer per group, the outputs
    side by side channels-last, equal to the grouped convolution padded and unpadded, at one
    pixel, primes and a batch; groups too narrow, strided or not 3×3 are not eligible."""
    from fcnfast.engine.winograd import GroupedWinogradConv2d, eligible_grouped

    torch.manual_seed(4)
    conv = nn.Conv2d(384, 258, 3, padding=1, groups=2)
    with torch.no_grad():
        conv.bias.normal_(0, 0.5)
    conv = conv.to(dtype)
    packed = PackedConv2d(conv, relu=True)
    assert eligible_grouped(packed) and not eligible(packed)
    grouped = GroupedWinogradConv2d(packed)
    assert [p.tile for p in grouped.parts] == [tile_for(dtype)] * 2
    tol = TOL[dtype, tile_for(dtype)]
    for shape in [(1, 384, 1, 1), (1, 384, 13, 7), (2, 384, 11, 5), (1, 384, 33, 45)]:
        x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
        y = grouped(x)
        assert y.is_contiguous(memory_format=torch.channels_last)
        want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1, groups=2).relu()
        torch.testing.assert_close(y.double(), want, rtol=0, atol=tol * want.abs().max().item())
        if min(shape[2:]) >= 3:
            want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), groups=2).relu()
            y = grouped.forward_unpadded(x)
            torch.testing.assert_close(y.double(), want, rtol=0, atol=tol * want.abs().max().item())
    for other in [nn.Conv2d(192, 192, 3, padding=1, groups=2), nn.Conv2d(384, 384, 3, stride=2, groups=2),
                  nn.Conv2d(384, 256, 5, padding=2, groups=2)]:
        assert not eligible_grouped(PackedConv2d(other, relu=False))


def test_alexnet_takes_it_for_conv3_to_conv5_in_float32_with_border_skipping():
    """float32 FCN-AlexNet: conv3 Winograd, conv4 and conv5 group by group; new sizes and a size
    met again give the float32 reference's labels on firm pixels."""
    from fcnfast.engine.compare import firm_pixels
    from fcnfast.engine.winograd import GroupedWinogradConv2d
    from fcnfast.images import to_network_input

    torch.manual_seed(2)
    model = build_model("fcn_alexnet", 5).eval()
    with torch.no_grad():
        model.score_fr.weight.normal_(0, 0.05)
    fast = Engine(model, torch.device("cpu"), torch.float32)
    assert fast.winograd_layers == 3 and fast.border is not None
    grouped = [n for n, m in fast.net.named_modules() if isinstance(m, GroupedWinogradConv2d)]
    assert grouped == ["conv4", "conv5"]
    for i, (h, w) in enumerate([(45, 61), (45, 61), (67, 33), (45, 61)]):
        pixels = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(i))
        labels = fast.run(pixels)
        with torch.inference_mode():
            ref = model(to_network_input(pixels, model.input_convention, torch.device("cpu"),
                                         torch.float32)).float()
        firm = firm_pixels(ref, torch.float32)
        assert firm.float().mean() > 0.5
        assert torch.equal(labels[firm].long(), ref.argmax(1)[firm]), f"frame {i} ({h}×{w})"


def test_engine_uses_it_for_resnet_and_keeps_the_labels():
    from fcnfast.engine.layers import _packs

    model, pixels = resnet_and_pixels()
    fast = Engine(model, torch.device("cpu"), torch.float32)
    direct = Engine(model, torch.device("cpu"), torch.float32, winograd=False)
    assert fast.winograd_layers == 13 and direct.winograd_layers == 0  # layer2-4 and the head
    assert sum(isinstance(m, WinogradConv2d) for m in fast.net.modules()) == 13
    # float32 rounding apart, the same scores: labels equal but at (rare) near-ties
    assert (fast.run(pixels) == direct.run(pixels)).float().mean() >= 0.999
    vgg = Engine(build_model("fcn8s", 5, widths=(8, 8, 16, 16, 128), fc_width=32).eval(),
                 torch.device("cpu"), torch.float32)
    assert vgg.winograd_layers == 2  # conv5_2, conv5_3 (128 wide both sides): F(4×4) pays
    if _packs(torch.bfloat16):  # F(2×2) in a pad-100 net: only WIDE_CHANNELS layers
        vgg16 = Engine(build_model("fcn8s", 5, widths=(8, 8, 16, 16, 128), fc_width=32).eval(),
                       torch.device("cpu"), torch.bfloat16)
        assert vgg16.winograd_layers == 0
        assert use_winograd(vgg16.net) == 2  # when forced
    with pytest.raises(ValueError, match="needs the CPU"):
        Engine(model, torch.device("meta"), torch.float32, winograd=True)


def test_a_resnet_in_bfloat16_runs_its_narrow_layers_direct_where_measured_faster(monkeypatch):
    """layer2's 128² and layer3's 256² (9 of 13) direct at a size met before, the wide ones (layer4,
    the head) Winograd; labels as the all-direct engine's on nearly every pixel, first call and
    later."""
    from fcnfast.engine import winograd
    from fcnfast.engine.layers import _packs

    if not _packs(torch.bfloat16):
        pytest.skip("no native bfloat16 convolution on this CPU")
    monkeypatch.setattr(winograd, "direct_faster", lambda *shape: True)
    monkeypatch.setattr(winograd, "fused_faster", lambda *shape: False)
    model, pixels = resnet_and_pixels()
    fast = Engine(model, torch.device("cpu"), torch.bfloat16)
    direct = Engine(model, torch.device("cpu"), torch.bfloat16, winograd=False)
    layers = [m for m in fast.net.modules() if isinstance(m, WinogradConv2d)]
    assert len(layers) == 13 and sum(m.direct is not None for m in layers) == 9
    want = direct.run(pixels)
    for _ in range(3):
        assert (fast.run(pixels) == want).float().mean() >= 0.99


def test_a_resnet_in_bfloat16_runs_one_pass_layers_where_measured_faster(monkeypatch):
    """With the one-pass layer measured faster: every 3×3 layer of at most FUSED_MAX_WEIGHT weights
    (layer2–layer4, not the 2048→512 head) runs it, at a new size and at one met again; labels as
    the all-direct engine's on nearly every pixel."""
    from fcnfast.engine import winograd

    if not (fusable(256, 256, torch.bfloat16, 2)):
        pytest.skip("no AVX-512 BF16 one-pass Winograd layer on this CPU")
    monkeypatch.setattr(winograd, "fused_faster", lambda *shape: True)
    model, pixels = resnet_and_pixels()
    fast = Engine(model, torch.device("cpu"), torch.bfloat16)
    direct = Engine(model, torch.device("cpu"), torch.bfloat16, winograd=False)
    layers = [m for m in fast.net.modules() if isinstance(m, WinogradConv2d)]
    fused = [m for m in layers if m.fused is not None]
    assert len(layers) == 13 and len(fused) == 12
    assert all(m.direct is None and m.products is None and m.u is None for m in fused)
    assert [(m.in_channels, m.out_channels) for m in layers if m.fused is None] == [(2048, 512)]
    want = direct.run(pixels)
    for _ in range(2):
        assert (fast.run(pixels) == want).float().mean() >= 0.99


def test_the_one_pass_layer_is_chosen_by_measurement_once_per_shape(monkeypatch):
    """Whole layers timed, the one-pass layer first; the separate calls only when clearly faster;
    once per shape; never where the CPU, the dtype, the tile or the width rule it out."""
    from fcnfast.engine import calibrate, winograd

    if not fusable(256, 256, torch.bfloat16, 2):
        pytest.skip("no AVX-512 BF16 one-pass Winograd layer on this CPU")
    ran = []
    times = []

    def paired(first, second):
        ran.append((first(), second()))
        return times.pop(0), times.pop(0)

    monkeypatch.setattr(calibrate, "paired_ms", paired)
    monkeypatch.setattr(winograd, "grouped_products_faster", lambda *a: True)
    monkeypatch.setattr(winograd, "direct_faster", lambda *a: False)
    winograd.fused_faster.cache_clear()
    try:
        times[:] = [2.0, 1.0]  # the separate calls twice as fast: taken
        assert not winograd.fused_faster(256, 256, 2, torch.bfloat16)
        f, s = ran[0]
        assert f.shape == s.shape == (1, 256, *winograd._MEASURED_MAP)
        assert torch.allclose(f.float(), s.float(), rtol=2e-2, atol=1e-2)
        times[:] = [1.0, 0.97]  # within the margin: the one-pass layer
        assert winograd.fused_faster(256, 256, 1, torch.bfloat16)
        assert winograd.fused_faster(256, 256, 1, torch.bfloat16) and len(ran) == 2  # cached
        for shape in [(256, 256, 1, torch.float32, 4), (256, 256, 1, torch.bfloat16, 4),
                      (2048, 512, 1, torch.bfloat16, 2), (256, 200, 1, torch.bfloat16, 2)]:
            assert not winograd.fused_faster(*shape)
        assert len(ran) == 2
    finally:
        winograd.fused_faster.cache_clear()


def test_one_pass_layer_needs_a_cpu_with_avx512_bf16():
    """Where it cannot run, it says why (and the engine never picks it)."""
    ok, why = native.winograd_bf16_status()
    if ok:
        assert why == ""
        return
    assert why and not fusable(256, 256, torch.bfloat16, 2)
    with pytest.raises(RuntimeError, match="cannot run here"):
        native.winograd_bf16_pack(torch.zeros(16, 256, 256, dtype=torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_pad_100_net_takes_it_for_its_wide_layers_with_border_skipping(dtype):
    """A VGG's 3×3 layers of 128+ channels are Winograd by default in float32 (here conv4_2 and
    conv4_3, 256², and conv5), its widest ones only in bfloat16 (conv5: 256→512, 512→512), border
    skipping on: first and later frames of a size and new sizes give the float32 reference's
    labels on firm pixels, and the direct whole run's winning scores within Winograd's rounding."""
    from fcnfast.engine.compare import firm_pixels
    from fcnfast.engine.layers import _packs
    from fcnfast.images import to_network_input

    if dtype == torch.bfloat16 and not _packs(dtype):
        pytest.skip("no native bfloat16 here")
    torch.manual_seed(1)
    model = build_model("fcn8s", 5, widths=(8, 8, 16, 256, 512), fc_width=32).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.out_channels == 5:
                m.weight.normal_(0, 0.05)
    fast = Engine(model, torch.device("cpu"), dtype)
    direct = Engine(model, torch.device("cpu"), torch.float32, winograd=False, skip_border=False)
    wide = ["conv5_1", "conv5_2", "conv5_3"]
    want_layers = wide if dtype == torch.bfloat16 else ["conv4_2", "conv4_3"] + wide
    assert fast.winograd_layers == len(want_layers) and fast.border is not None
    assert [n for n, m in fast.net.named_modules() if isinstance(m, WinogradConv2d)] == want_layers
    for i, (h, w) in enumerate([(45, 61), (45, 61), (45, 61), (37, 52), (45, 61)]):
        pixels = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(i))
        labels, scores = fast.run(pixels, return_scores=True)
        _, want = direct.run(pixels, return_scores=True)
        with torch.inference_mode():
            ref = model(to_network_input(pixels, model.input_convention, torch.device("cpu"),
                                         torch.float32)).float()
        span = (ref.max() - ref.min()).item()
        atol = (1e-4 if dtype == torch.float32 else 5e-2) * span
        torch.testing.assert_close(scores.float(), want, rtol=0, atol=atol)
        firm = firm_pixels(ref, dtype)
        assert firm.float().mean() > 0.5
        assert torch.equal(labels[firm].long(), ref.argmax(1)[firm]), f"frame {i} ({h}×{w})"
    # a Winograd layer's core computed alone into its border buffer
    assert any(e.buffers.get("conv5_1") is not None for e in fast.border._shapes.values())


def test_threads_and_copies_get_their_own_workspace():
    import copy
    import threading

    conv, packed = layer(128, 128, 1, True, torch.float32, seed=5)
    wino = WinogradConv2d(packed)
    xs = [torch.randn(1, 128, 9 + i, 11).contiguous(memory_format=torch.channels_last) for i in range(2)]
    want = [wino(x) for x in xs]
    bad = []

    def work(i):
        for _ in range(20):
            if not torch.equal(wino(xs[i]), want[i]):
                bad.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
    assert torch.equal(copy.deepcopy(wino)(xs[0]), want[0])


def test_a_nets_layers_share_one_workspace_and_a_copy_gets_its_own():
    """One pair of tile buffers for all the layers (grown to the largest, not reallocated for a
    smaller size); a deep copy or pickle of the net shares none of it with the original."""
    import copy
    import pickle

    torch.manual_seed(1)
    net = nn.Sequential(*[PackedConv2d(nn.Conv2d(c, k, 3, padding=1), True)
                          for c, k in ((128, 256), (256, 128))])
    assert use_winograd(net) == 2
    a, b = net
    assert a.workspace is b.workspace
    x = torch.randn(1, 128, 12, 10).contiguous(memory_format=torch.channels_last)
    want = net(x)
    v, _ = a.workspace.buffers(1, 1, 1, torch.float32)
    grown = v.data_ptr()
    net(x[:, :, :5, :7].contiguous(memory_format=torch.channels_last))  # smaller: the same memory
    assert a.workspace.buffers(1, 1, 1, torch.float32)[0].data_ptr() == grown
    for twin in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert twin[0].workspace is twin[1].workspace and twin[0].workspace is not a.workspace
        assert torch.equal(twin(x), want)


def test_a_grouped_layer_copies_and_pickles_after_its_first_call():
    """The grouped products' weight is a oneDNN tensor once packed (no storage to copy): copies and
    pickles take U back as a plain tensor and give the same output."""
    import copy
    import pickle

    conv, packed = layer(256, 256, 2, True, torch.float32, seed=7)
    wino = WinogradConv2d(packed, grouped=True)
    x = torch.randn(1, 256, 9, 8).contiguous(memory_format=torch.channels_last)
    want = wino(x)
    assert wino.products.pack is not None and wino.u is None
    for twin in (copy.deepcopy(wino), pickle.loads(pickle.dumps(wino))):
        assert torch.equal(twin(x), want)


def test_bfloat16_grouped_products_pack_once_for_row_counts_that_share_a_layout():
    """bfloat16: one pack serves every row count of at least SHARED_PACK_MIN_ROWS; fewer rows (where
    oneDNN lays the weight out otherwise) take the batched product and leave the pack alone. Each
    size gives what it gives in a fresh layer, whatever ran before."""
    from fcnfast.engine.winograd import SHARED_PACK_MIN_ROWS

    def fresh_layer():
        return WinogradConv2d(layer(256, 256, 2, False, torch.bfloat16, seed=8)[1], grouped=True,
                              direct_when_met=False)

    wino, packs = fresh_layer(), []
    sizes = [(30, 31), (9, 8), (47, 33), (5, 5), (31, 29), (9, 8), (30, 31)]
    for h, w in sizes:
        x = torch.randn(1, 256, h, w).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        fresh = fresh_layer()
        want = [fresh(x), fresh(x)]
        for i in range(2):
            before = wino.products.pack
            assert torch.equal(wino(x), want[i]), (h, w)
            if native.winograd_tiles(1, h, w, 2, 2, 2) < SHARED_PACK_MIN_ROWS - 16:
                assert wino.products.pack is before  # the batched product ran
            else:
                packs.append(wino.products.pack[1])
    assert len(packs) == 8 and all(p is packs[0] for p in packs)


def test_grouped_products_pack_again_for_a_new_row_count():
    """float32: oneDNN lays the grouped weight out by the row count (and reorders a pack made for
    another layout on every call): a new row count gets its own pack, and every size gives what it
    gives in a fresh layer, whatever ran before."""
    from fcnfast.engine.winograd import gemm_rows

    conv, packed = layer(256, 256, 2, False, torch.float32, seed=8)
    wino = WinogradConv2d(packed, grouped=True)
    sizes = [(9, 8), (23, 31), (23, 31), (5, 5), (40, 3), (9, 8)]
    xs = [torch.randn(1, 256, h, w).contiguous(memory_format=torch.channels_last) for h, w in sizes]
    fresh = [WinogradConv2d(layer(256, 256, 2, False, torch.float32, seed=8)[1], grouped=True)(x)
             for x in xs]
    packs = []
    for i, (x, (h, w)) in enumerate(zip(xs, sizes)):
        assert torch.equal(wino(x), fresh[i]), sizes[i]
        assert wino.products.pack[0] == gemm_rows(native.winograd_tiles(1, h, w, 2, 2, wino.tile))
        packs.append(wino.products.pack[1])
    assert packs[1] is not packs[0] and packs[2] is packs[1]  # the same row count again: the same pack


def test_the_products_are_chosen_by_measurement_once_per_shape(monkeypatch):
    """Whole layers timed, grouped first, then batched; batched only when clearly faster; once per
    shape."""
    from fcnfast.engine import calibrate, winograd

    ran = []

    def timer(*times):
        left = list(times)

        def paired(first, second):
            ran.append((first(), second()))  # real layers, of the dtype's tile
            return left.pop(0), left.pop(0)
        monkeypatch.setattr(calibrate, "paired_ms", paired)
        return left

    winograd.grouped_products_faster.cache_clear()
    try:
        left = timer(1.0, 2.0)
        assert winograd.grouped_products_faster(256, 512, torch.float32)
        assert winograd.grouped_products_faster(256, 512, torch.float32) and not left  # cached
        g, b = ran[0]
        assert g.shape == b.shape == (1, 512, *winograd._MEASURED_MAP) and torch.allclose(g, b, rtol=1e-4)
        assert not winograd.grouped_products_faster(128, 512, torch.float32)  # too narrow: not timed
        assert len(ran) == 1
        timer(3.0, 2.0)
        assert not winograd.grouped_products_faster(256, 256, torch.bfloat16)
        timer(3.0, 2.9)  # within the margin: the grouped products
        assert winograd.grouped_products_faster(512, 512, torch.float32)
    finally:
        winograd.grouped_products_faster.cache_clear()


def test_a_narrow_layer_measured_faster_direct_runs_direct_at_a_size_met_before(monkeypatch):
    """A size met for the first time: Winograd (its products' kernels are shared between sizes);
    met again: exactly the direct convolution's output, padded and unpadded calls alike."""
    from fcnfast.engine import winograd

    asked = []
    monkeypatch.setattr(winograd, "direct_faster", lambda *shape: asked.append(shape) or True)
    conv, packed = layer(128, 131, 2, True, torch.float32, seed=3)
    wino = WinogradConv2d(packed, tile=2)
    assert wino.direct is not None and asked == [(128, 131, 2, torch.float32)]
    plain = WinogradConv2d(layer(128, 131, 2, True, torch.float32, seed=3)[1], tile=2,
                           direct_when_met=False)
    direct = layer(128, 131, 2, True, torch.float32, seed=3)[1]
    for h, w in [(13, 7), (1, 1), (5, 17)]:
        x = torch.randn(1, 128, h, w).contiguous(memory_format=torch.channels_last)
        first, again = wino(x), wino(x)
        assert torch.equal(first, plain(x)), (h, w)
        assert torch.equal(again, direct(x)), (h, w)
        assert not torch.equal(first, again)  # (a check that the two paths did differ)
        xp = F.pad(x, (2, 2, 2, 2))  # the same output tiles: met
        assert torch.equal(wino.forward_unpadded(xp), direct.forward_unpadded(xp))
        want = reference(conv, x, 2, 2, True)
        assert (again - want).abs().max() / want.abs().max() < TOL[(torch.float32, 2)]
    xp = F.pad(torch.randn(1, 128, 6, 9), (2, 2, 2, 2)).contiguous(memory_format=torch.channels_last)
    assert torch.equal(wino.forward_unpadded(xp), plain.forward_unpadded(xp))  # a new size, unpadded
    # Wide layers (WIDE_CHANNELS) and float32's F(4×4) always pay: not measured, never direct.
    asked.clear()
    assert WinogradConv2d(layer(256, 512, 1, True, torch.float32)[1], tile=2).direct is None
    assert WinogradConv2d(layer(128, 128, 1, True, torch.float32)[1], tile=4).direct is None
    assert asked == []
    # A pad-100 chain's layers never switch (a border template and its cores must agree).
    net = nn.Sequential(layer(128, 128, 1, True, torch.float32)[1])
    use_winograd(net, chain=True)
    assert net[0].direct is None and asked == []


def test_direct_is_chosen_by_measurement_once_per_shape(monkeypatch):
    """Winograd timed first, then the direct convolution; direct only when clearly faster."""
    from fcnfast.engine import calibrate, winograd

    times = []
    monkeypatch.setattr(calibrate, "paired_ms",
                        lambda first, second: (first(), second(), times.pop(0), times.pop(0))[2:])
    monkeypatch.setattr(winograd, "grouped_products_faster", lambda *shape: False)
    winograd.direct_faster.cache_clear()
    try:
        times[:] = [2.0, 1.0]
        assert winograd.direct_faster(128, 128, 2, torch.float32)
        assert winograd.direct_faster(128, 128, 2, torch.float32) and not times  # cached
        times[:] = [2.0, 1.95]  # within the margin: Winograd stays
        assert not winograd.direct_faster(128, 128, 1, torch.float32)
        times[:] = [1.0, 2.0]
        assert not winograd.direct_faster(256, 256, 2, torch.float32)
    finally:
        winograd.direct_faster.cache_clear()


@pytest.mark.parametrize("grouped", [False, True], ids=["batched", "grouped"])
def test_a_size_after_another_gives_the_labels_of_a_fresh_engine(monkeypatch, grouped):
    """What ran before (another size, other row counts) changes nothing in what a size gives."""
    from fcnfast.engine import winograd

    monkeypatch.setattr(winograd, "grouped_products_faster",
                        lambda c, k, dtype, points: grouped and min(c, k) >= 256)
    model, a = resnet_and_pixels(seed=2)
    b = torch.randint(0, 256, (1, 70, 37, 3), dtype=torch.uint8)
    engine = Engine(model, torch.device("cpu"), torch.float32)
    assert any(getattr(m, "grouped", False) for m in engine.net.modules()) == grouped
    want_b = Engine(model, torch.device("cpu"), torch.float32).run(b)
    want_a = engine.run(a)
    assert torch.equal(engine.run(b), want_b)
    assert torch.equal(engine.run(a), want_a)

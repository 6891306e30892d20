"""The engine against the reference path: same labels on firm pixels, every model, every backend
here, float32 and the low-precision default; and its guards (precision, memory, backend failure)."""
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fcnfast
from fcnfast import ops
from fcnfast.data.synthetic import synthetic_scene
from fcnfast.engine import Engine, compute_dtype
from fcnfast.engine.compare import FIRM_MARGIN
from fcnfast.engine.layers import PackedConv2d, inference_copy
from fcnfast.images import to_network_input
from fcnfast.models import build_model

# Narrow VGG trunks keep the full-geometry nets (pad 100, 7×7 fc6, every crop) cheap on CPU.
NARROW = dict(widths=(8, 8, 16, 16, 16), fc_width=32)
VGG = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
ARCHS = VGG + ("fcn_alexnet", "fcn_googlenet", "fcn_resnet50")
CLASSES = 5


def make_model(arch: str, learned: bool = False, seed: int = 0):
    """A reference model with random class layers (FCN starts them at zero) so labels vary; with
    ``learned`` the 2× deconvolutions are random too (the engine's non-bilinear path)."""
    model = build_model(arch, CLASSES, **(NARROW if arch in VGG else {})).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and m.out_channels == CLASSES:
                m.weight.normal_(0, 0.02, generator=g)
                m.bias.normal_(0, 0.02, generator=g)
            if learned and isinstance(m, nn.ConvTranspose2d) and m.stride[0] == 2:
                m.weight.normal_(0, 0.1, generator=g)
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding matters
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


def scenes(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synthetic_scene(seed + i, h, w)[0]) for i in range(n)])


def reference_scores(model, pixels):
    """float32 reference scores on the CPU (run where the model is: a Segmenter moves it)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        x = to_network_input(pixels, model.input_convention, device, torch.float32)
        return model(x).float().cpu()


def assert_firm_agreement(labels, ref, dtype, at_least=0.999):
    """Labels equal the reference wherever its top-2 margin exceeds the dtype's rounding."""
    top2 = ref.topk(2, dim=1).values
    firm = (top2[:, 0] - top2[:, 1]) > FIRM_MARGIN[dtype] * float(ref.max() - ref.min())
    same = labels.long() == ref.argmax(1)
    assert firm.float().mean() > 0.5, "too few firm pixels: the test would prove nothing"
    agreement = same[firm].float().mean().item()
    assert agreement >= at_least, (f"labels agree on {agreement:.4%} of {int(firm.sum())} firm "
                                   f"pixels; {int((~same & firm).sum())} differ")


def kernel_backends():
    """Kernel backends that run on CPU tensors here (Triton only through its interpreter)."""
    return [b for b in ops.BACKENDS if b != "torch" and ops.availability("preprocess", b, "cpu")[0]]


@pytest.mark.parametrize("learned", [False, True], ids=["bilinear", "learned"])
@pytest.mark.parametrize("arch", ARCHS)
def test_engine_equals_reference_float32(arch, learned):
    if learned and arch not in ("fcn16s", "fcn8s", "fcn8s_atonce"):
        pytest.skip("no 2x deconvolution to learn")
    model = make_model(arch, learned)
    pixels = scenes(2, 45, 67)  # odd sizes; two scenes in one batch
    ref = reference_scores(model, pixels)
    engine = Engine(model, torch.device("cpu"), torch.float32)
    labels, scores = engine.run(pixels, return_scores=True)
    assert labels.shape == (2, 45, 67) and labels.dtype == torch.uint8
    assert_firm_agreement(labels, ref, torch.float32, at_least=1.0)
    best = ref.gather(1, labels.long()[:, None])[:, 0]
    torch.testing.assert_close(scores.float(), best, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch"] + kernel_backends())
@pytest.mark.parametrize("arch", ["fcn8s", "fcn_alexnet", "fcn_resnet50"])
def test_every_backend_gives_the_reference_labels(arch, backend):
    model = make_model(arch, learned=True)
    pixels = scenes(1, 23, 31, seed=5)
    engine = Engine(model, torch.device("cpu"), torch.float32, backend=backend)
    assert set(engine.op_backends.values()) == {backend}
    assert_firm_agreement(engine.run(pixels), reference_scores(model, pixels), torch.float32, 1.0)


@pytest.mark.parametrize("arch", ["fcn8s", "fcn_googlenet", "fcn_resnet50"])
def test_default_low_precision_agrees_on_firm_pixels(arch):
    model = make_model(arch)
    pixels = scenes(1, 61, 83, seed=11)
    seg = fcnfast.Segmenter(model, device="cpu")
    assert seg.dtype == compute_dtype(torch.device("cpu"), None)
    engine_labels = torch.from_numpy(seg.segment(pixels[0].numpy()))[None]
    assert_firm_agreement(engine_labels, reference_scores(model, pixels), seg.dtype)


def test_bfloat16_engine_agrees_on_firm_pixels():
    model = make_model("fcn16s", learned=True)
    pixels = scenes(2, 50, 40, seed=3)
    engine = Engine(model, torch.device("cpu"), torch.bfloat16)
    assert_firm_agreement(engine.run(pixels), reference_scores(model, pixels), torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_on_every_backend(dtype):
    """float16 on CPU runs eager convolutions (oneDNN packs it only on AVX512-FP16 CPUs)."""
    model = make_model("fcn8s", learned=True)
    pixels = scenes(1, 29, 37, seed=9)
    ref = reference_scores(model, pixels)
    for backend in ["torch"] + kernel_backends():
        engine = Engine(model, torch.device("cpu"), dtype, backend=backend)
        assert_firm_agreement(engine.run(pixels), ref, dtype)


def test_cpu_trunk_is_prepacked_with_fused_relu_and_folded_batchnorm():
    vgg = inference_copy(make_model("fcn8s"), torch.device("cpu"), torch.float32)
    assert isinstance(vgg.conv1_1, PackedConv2d) and vgg.conv1_1.attr == "relu"
    assert isinstance(vgg.relu1_1, nn.Identity)
    assert isinstance(vgg.score_fr, PackedConv2d) and vgg.score_fr.attr == "none"
    resnet = inference_copy(make_model("fcn_resnet50"), torch.device("cpu"), torch.bfloat16)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    assert all(p.dtype == torch.bfloat16 for p in resnet.parameters())


def test_full_resolution_logits_are_never_materialised():
    """No tensor with C channels at the image size is created on the segment path."""
    model = make_model("fcn8s", learned=True)
    pixels = scenes(1, 96, 128)
    engine = Engine(model, torch.device("cpu"), torch.float32)

    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    self.seen.append(tuple(t.shape))
            return out

    with Shapes() as mode:
        engine.run(pixels)
    assert (1, 96, 128) in mode.seen  # the labels: the mode does see the outputs
    full = [s for s in mode.seen if len(s) == 4 and s[1] == CLASSES and s[2:] == (96, 128)]
    assert not full, f"full-resolution score maps were created: {full}"


def test_batches_of_mixed_sizes_and_stream_match_single_images():
    model = make_model("fcn16s")
    seg = fcnfast.Segmenter(model, device="cpu", dtype=torch.float32)
    images = [scenes(1, h, w, seed=h)[0].numpy() for h, w in ((30, 41), (30, 41), (17, 23), (30, 41))]
    singles = [seg.segment(im) for im in images]
    for got, want in zip(seg.segment_batch(images, batch_size=2), singles):
        np.testing.assert_array_equal(got, want)
    streamed = list(seg.stream(iter(images), batch_size=3))
    assert len(streamed) == len(images)
    for got, want in zip(streamed, singles):
        np.testing.assert_array_equal(got, want)
    tensor_in = list(seg.stream([torch.from_numpy(images[2])]))
    assert isinstance(tensor_in[0], torch.Tensor)
    with pytest.raises(ValueError, match="batch_size"):
        next(seg.stream(images, batch_size=0))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_stream_memory_stays_flat_over_10000_frames():
    model = build_model("fcn32s", 3, widths=(1, 1, 1, 1, 1), fc_width=2).eval()
    seg = fcnfast.Segmenter(model, device="cpu", dtype=torch.float32)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, (8, 10, 3), dtype=np.uint8) for _ in range(16)]

    def frames(n):
        for i in range(n):
            yield pool[i % len(pool)]

    rss = []
    count = 0
    for labels in seg.stream(frames(10_000), batch_size=32):
        count += 1
        if count in (1000, 10_000):
            rss.append(_rss_mb())
        assert labels.shape == (8, 10)
    assert count == 10_000
    assert rss[1] - rss[0] < 25, f"RSS grew from {rss[0]:.0f} MB to {rss[1]:.0f} MB"


@pytest.mark.parametrize("arch", ["fcn8s", "fcn16s", "fcn_alexnet", "fcn_googlenet"])
def test_border_skipping_is_exact_on_later_frames(arch):
    """Later frames of a size recompute only the image's core of each early map; the border kept
    from the first frame must give what a whole run gives, for new images and after size changes."""
    model = make_model(arch, learned=True)
    whole = Engine(model, torch.device("cpu"), torch.float32, skip_border=False)
    skipping = Engine(model, torch.device("cpu"), torch.float32)
    assert skipping.border is not None and whole.border is None
    sizes = [(45, 67), (45, 67), (30, 41), (45, 67), (30, 41), (52, 38), (45, 67)]
    for i, (h, w) in enumerate(sizes):
        pixels = scenes(2, h, w, seed=100 + i)
        l1, s1 = whole.run(pixels, return_scores=True)
        l2, s2 = skipping.run(pixels, return_scores=True)
        torch.testing.assert_close(s2, s1, rtol=1e-5, atol=1e-6)
        assert torch.equal(l1, l2), f"frame {i} ({h}×{w}): labels differ"
    assert len(skipping.border._shapes) == skipping.border.capacity
    buffers = next(iter(skipping.border._shapes.values())).buffers
    assert sum(b is not None for b in buffers.values()) >= 3  # really skipping something


def _biased(arch):
    """A model whose every convolution has a random bias: the zero input's maps, from which a
    new size's border is assembled, are then far from zero."""
    model = make_model(arch, learned=True)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5, generator=g)
    return model


def _whole_maps(net, names, x):
    """Every tracked layer's whole output (the reference for the assembled borders)."""
    from fcnfast.engine import border

    maps, h = {}, x
    for _, name, layer in border._leaves(net, names):
        if border.window_geometry(layer) is None and not isinstance(layer, border._POINTWISE):
            break
        h = layer(h)
        maps[name] = h.clone()
    return maps


@pytest.mark.parametrize("arch, dtype", [("fcn8s", torch.float32), ("fcn8s", torch.bfloat16),
                                         ("fcn_alexnet", torch.float32), ("fcn_googlenet", torch.float32)])
def test_a_new_sizes_border_assembled_from_a_template_equals_the_whole_run(arch, dtype):
    """Outside each map's core, as far as the next layer reads it, a new size's buffers hold
    exactly the whole run's values, for sizes of every residue the template must match (1×1,
    odd, primes, multiples of 32), with the one-frame and the many-frame template; the last
    buffer (run whole by what follows) is filled all over. From a Winograd layer on (float32
    AlexNet's conv3), within its rounding: its tiles start at the template's corner, not the map's."""
    from fcnfast.engine import border
    from fcnfast.engine.winograd import WinogradConv2d

    engine = Engine(_biased(arch), torch.device("cpu"), dtype)
    net, names = engine.net, engine.net.trunk_chain
    leaves = [(name, layer) for _, name, layer in border._leaves(net, names)]
    first_winograd = next((i for i, (_, layer) in enumerate(leaves) if isinstance(layer, WinogradConv2d)),
                          len(leaves))
    rounded = {name for name, _ in leaves[first_winograd:]}
    assert bool(rounded) == (arch == "fcn_alexnet" and dtype == torch.float32)
    deep_seen = partial_seen = False
    # full-width AlexNet is slow
    sizes = [(1, 1), (31, 2), (45, 67), (64, 64)] + ([(97, 131)] if arch == "fcn8s" else [])
    for h, w in sizes:
        x = engine.network_input(scenes(2, h, w, seed=h))
        with torch.inference_mode():
            whole = _whole_maps(net, names, x)
            cache = border.BorderCache()
            shallow = cache._build(net, names, x, None)
            shallow_count = sum(b is not None for b in shallow.buffers.values())
            deep = cache._build(net, names, x, shallow)
        assert deep.repeated and shallow_count >= 2
        deep_seen |= sum(b is not None for b in deep.buffers.values()) > shallow_count
        steps = {s.name: s for s in border._chain_plan(list(border._leaves(net, names)),
                                                         tuple(x.shape), x.element_size())}
        last = [s.name for s in steps.values()][deep.last]
        for name, buffer in deep.buffers.items():
            ref = whole[name]
            assert buffer.shape == ref.shape and buffer.is_contiguous(memory_format=torch.channels_last)
            outside = torch.zeros(ref.shape[2:], dtype=torch.bool)
            (r0, r1), (c0, c1) = deep.filled[name]
            outside[r0:r1, c0:c1] = True
            if name == last:
                assert outside.all(), name
            if not outside.all():  # a map handed on (a skip layer's) is filled all over
                partial_seen = True
                plan = list(steps.values())
                i = [st.name for st in plan].index(name)
                assert border._read_rect(plan, i, {plan[i].top}) == ((0, ref.shape[2]), (0, ref.shape[3]))
            (y0, y1), (x0, x1) = steps[name].core
            outside[y0:y1, x0:x1] = False
            if name in rounded:
                span = float(ref.max() - ref.min()) or 1.0
                torch.testing.assert_close(buffer[:, :, outside], ref[:, :, outside], rtol=0,
                                           atol=2e-5 * span, msg=f"{h}×{w} {name}")
            else:
                assert torch.equal(buffer[:, :, outside], ref[:, :, outside]), f"{h}×{w} {name}"
    assert deep_seen or arch == "fcn_googlenet"  # the repeated shape buffers deeper
    assert partial_seen  # some border is left unwritten


def _border_entry_equal_to_a_whole_run(whole, skipping, pixels):
    """Run both float32 engines on ``pixels``: the border-skipping one's scores and labels are the
    whole run's; its border cache's entry for the shape."""
    l1, s1 = whole.run(pixels, return_scores=True)
    l2, s2 = skipping.run(pixels, return_scores=True)
    torch.testing.assert_close(s2, s1, rtol=1e-5, atol=1e-6)
    assert torch.equal(l1, l2), f"{tuple(pixels.shape)}: labels differ"
    return skipping.border._shapes[((pixels.shape[0], 3, *pixels.shape[1:3]), torch.float32,
                                    torch.device("cpu"))]


@pytest.mark.parametrize("arch, first_pool", [("fcn8s", "pool1"), ("fcn_alexnet", "pool1"),
                                              ("fcn_googlenet", "pool1.3x3_s2")])
def test_the_full_resolution_layers_keep_no_border_buffers(arch, first_pool):
    """The layers before the first pool compute their widened cores one from the other: no
    buffers (nor their copies) for them, only the pool's; a whole run's scores all the same, on
    the first frame of a size and on later ones."""
    from fcnfast.engine import border

    model = _biased(arch)
    whole = Engine(model, torch.device("cpu"), torch.float32, skip_border=False)
    skipping = Engine(model, torch.device("cpu"), torch.float32)
    for i, (h, w) in enumerate([(45, 67), (45, 67), (23, 30)]):
        pixels = scenes(1, h, w, seed=300 + i)
        entry = _border_entry_equal_to_a_whole_run(whole, skipping, pixels)
        names = [name for _, name, _ in border._leaves(skipping.net, skipping.net.trunk_chain)]
        assert entry.prefix is not None and names[entry.prefix.last] == first_pool
        assert set(entry.buffers) & set(names[:entry.prefix.last]) == set()
        assert entry.buffers[first_pool] is not None


def test_a_new_size_skips_the_border_from_its_first_frame():
    """A folder of photos of many sizes: every size's first frame already computes only the
    cores (its border from a template) and equals a whole run; a size's second frame deepens
    its buffers; a third shape reuses the memory of the one it drops."""
    model = _biased("fcn8s")
    whole = Engine(model, torch.device("cpu"), torch.float32, skip_border=False)
    skipping = Engine(model, torch.device("cpu"), torch.float32)
    arenas = []
    for i, (h, w) in enumerate([(45, 67), (31, 41), (31, 41), (52, 38), (37, 59)]):
        pixels = scenes(1, h, w, seed=200 + i)
        entry = _border_entry_equal_to_a_whole_run(whole, skipping, pixels)
        assert sum(b is not None for b in entry.buffers.values()) >= 3
        assert entry.repeated == (i == 2)
        arenas.append(entry.arena)
    assert len(skipping.border._shapes) == 2
    assert arenas[2] is arenas[1]  # the second frame keeps the shape's memory
    assert arenas[3] is arenas[0]  # a smaller new shape takes the dropped one's memory


def test_a_new_size_of_residues_met_before_reuses_their_template(monkeypatch):
    """Sizes congruent modulo the strides share a template: the second builds none, kept condensed
    to its edge bands, and still equals a whole run."""
    from fcnfast.engine import border

    made = []
    template = border._template
    monkeypatch.setattr(border, "_template", lambda *a: made.append(a[1]) or template(*a))
    model = _biased("fcn8s")
    whole = Engine(model, torch.device("cpu"), torch.float32, skip_border=False)
    skipping = Engine(model, torch.device("cpu"), torch.float32)
    for i, (h, w) in enumerate([(45, 67), (53, 75), (37, 83)]):  # 45 ≡ 53 ≡ 37, 67 ≡ 75 ≡ 83 (mod 8)
        _border_entry_equal_to_a_whole_run(whole, skipping, scenes(1, h, w, seed=500 + i))
    assert len(made) == 1
    (maps,) = skipping.border._templates.values()
    assert next(iter(maps.values())).shape[2:] == (1, 1)  # condensed: the first map is its bias


@pytest.mark.parametrize("arch", ["fcn8s", "fcn_alexnet", "fcn_googlenet"])
def test_the_border_left_unwritten_is_never_read(arch, monkeypatch):
    """A buffer's border is written only where the next layer reads it: with every buffer poisoned
    (NaN) before assembly, new sizes, a size's later frames (a deeper template, its buffers kept)
    and a size met after others still give a whole run's scores."""
    from fcnfast.engine import border

    take = border._Arena.take
    monkeypatch.setattr(border._Arena, "take",
                        lambda self, shape, dtype: take(self, shape, dtype).fill_(float("nan")))
    model = _biased(arch)
    whole = Engine(model, torch.device("cpu"), torch.float32, skip_border=False)
    skipping = Engine(model, torch.device("cpu"), torch.float32)
    for i, (h, w) in enumerate([(45, 67), (45, 67), (45, 67), (29, 53), (45, 67), (1, 1), (64, 33)]):
        entry = _border_entry_equal_to_a_whole_run(whole, skipping, scenes(1, h, w, seed=400 + i))
        assert sum(b is not None for b in entry.buffers.values()) >= 2


@pytest.mark.parametrize("outputs", [10, 64])
@pytest.mark.parametrize("dtype, large", [(torch.float32, False), (torch.float32, True),
                                          (torch.bfloat16, False), (torch.bfloat16, True)])
def test_one_by_one_layers_at_a_new_shape_equal_the_convolution(outputs, dtype, large, monkeypatch):
    """A 1×1 layer runs every shape as a matrix product (its weight packed once for any row
    count) when it is large or float32, and as the convolution with its packed weight when it
    is a small bfloat16 one: same numbers at every shape."""
    import fcnfast.engine.layers as layers

    if dtype == torch.bfloat16 and not layers._packs(dtype):
        pytest.skip("no native bfloat16 here")
    if large:
        monkeypatch.setattr(layers, "_PACKED_ANY_SHAPE_MAX_WEIGHT", 24 * outputs - 1)
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(24, outputs, 1).to(dtype)
    layer = layers.PackedConv2d(conv, relu=True)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=3e-2)
    for shape in [(1, 24, 17, 19), (2, 24, 3, 11), (1, 24, 1, 1)]:
        x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
        other = torch.randn(shape[0], outputs, *shape[2:]).to(dtype)
        other = other.contiguous(memory_format=torch.channels_last)
        want = torch.relu(conv(x))
        for _ in range(2):  # a new shape, then a shape seen before
            torch.testing.assert_close(layer(x).float(), want.float(), **tol)
            torch.testing.assert_close(layer.add_relu_(x, other.clone()).float(),
                                       torch.relu(conv(x) + other).float(), **tol)
    product = large or dtype == torch.float32
    assert layer.product == product
    # a product at every shape: no convolution weight packed
    assert (layer.packed is None) == product and (layer.product_packed is not None) == product
    if not product:
        assert layer.packed_shape == (1, 24, 17, 19)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_weight_bound_product_pads_a_new_row_count_only(dtype, monkeypatch):
    """fc7-like (few rows, a wide weight) in bfloat16: a row count met for the first time runs
    rounded up to WEIGHT_BOUND_ROW_STEP (so a folder of sizes reuses oneDNN's kernels), a count
    met again runs as it is; float32 (no kernel per count) runs every count as it is. The
    numbers are the convolution's either way, the padding rows dropped."""
    import fcnfast.engine.layers as layers

    if dtype == torch.bfloat16 and not layers._packs(dtype):
        pytest.skip("no native bfloat16 here")
    monkeypatch.setattr(layers, "_PACKED_ANY_SHAPE_MAX_WEIGHT", 0)  # a product at this size
    torch.manual_seed(8)
    conv = torch.nn.Conv2d(40, 512, 1).to(dtype)
    layer = layers.PackedConv2d(conv, relu=True)
    assert layer.product
    runs = []

    class Counting:  # oneDNN's ops, the product's row counts recorded
        def __getattr__(self, name):
            return getattr(torch.ops.mkldnn, name)

        def _linear_pointwise(self, rows, *rest):
            runs.append(rows.shape[0])
            return torch.ops.mkldnn._linear_pointwise(rows, *rest)

    monkeypatch.setattr(layers, "_mkldnn", Counting())
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=3e-2)
    step = layers.WEIGHT_BOUND_ROW_STEP
    for shape in [(1, 40, 7, 9), (1, 40, 7, 9), (2, 40, 1, 1), (1, 40, 1, 1), (1, 40, 8, 8),
                  (1, 40, 13, 5), (1, 40, 9, 7)]:
        rows = shape[0] * shape[2] * shape[3]
        met = rows in layer.rows_met.seen
        x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
        y = layer(x)
        assert y.shape == (shape[0], 512, *shape[2:])
        torch.testing.assert_close(y.float(), torch.relu(conv(x)).float(), **tol)
        rounded = dtype == torch.bfloat16 and not met
        assert runs[-1] == (-(-rows // step) * step if rounded else rows)
    # bfloat16: 63 rows padded once, then as they are; 65 → 128; a product of many rows never pads
    assert runs[:2] == ([64, 63] if dtype == torch.bfloat16 else [63, 63])
    assert layers.product_rows(65, 512) == 128 and layers.product_rows(65, 256) == 65


@pytest.mark.parametrize("kernel, stride, padding", [(7, 1, 0), ((4, 5), (2, 1), (1, 2)), (6, 3, 0)])
def test_a_float32_weight_bound_windowed_layer_runs_as_a_product_of_unfolded_windows(
        kernel, stride, padding, monkeypatch):
    """fc6-like (a large window, a large weight) in float32: a matrix product over the unfolded
    windows (im2col), with the convolution's numbers at every shape
    (an output of one pixel, inputs just the window's size, a batch), padded or taken as already
    padded; bfloat16, grouped, dilated and 3×3 ones stay convolutions."""
    import fcnfast.engine.layers as layers

    monkeypatch.setattr(layers, "_PACKED_ANY_SHAPE_MAX_WEIGHT", 0)  # weight-bound at this size
    torch.manual_seed(11)
    conv = torch.nn.Conv2d(13, 96, kernel, stride=stride, padding=padding)
    layer = layers.PackedConv2d(conv, relu=True)
    assert layer.windowed and layer.product
    kh, kw = conv.kernel_size
    for shape in [(1, 13, 23, 17), (1, 13, kh, kw), (2, 13, kh + 4, kw + 1), (1, 13, 23, 17),
                  (1, 13, 31, 2 * kw + 3)]:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(layer(x), torch.relu(conv(x)), rtol=1e-5, atol=1e-5)
        unpadded = torch.relu(nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride))
        torch.testing.assert_close(layer.forward_unpadded(x), unpadded, rtol=1e-5, atol=1e-5)
        other = torch.randn_like(torch.relu(conv(x)))
        torch.testing.assert_close(layer.add_relu_(x, other.clone()), torch.relu(conv(x) + other),
                                   rtol=1e-5, atol=1e-5)
    assert layer.packed is None and layer.product_packed is not None
    with pytest.raises(ValueError, match="smaller than the"):
        layer.forward_unpadded(torch.randn(1, 13, kh - 1, kw))
    for other in [conv.to(torch.bfloat16), torch.nn.Conv2d(12, 96, 5, groups=2),
                  torch.nn.Conv2d(13, 96, 5, dilation=2), torch.nn.Conv2d(13, 96, 3, padding=1)]:
        assert not layers.PackedConv2d(other, relu=False).windowed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_strided_one_by_one_layer_is_packed_for_each_new_shape(dtype):
    """The pack of a strided 1×1 layer (ResNet's downsampling, not a plain product) follows the
    shape (oneDNN wants another layout per shape, and would reorder a stale one on every call, in
    bfloat16 60× the layer's time): the same numbers at every shape, whatever ran before."""
    import fcnfast.engine.layers as layers

    if dtype == torch.bfloat16 and not layers._packs(dtype):
        pytest.skip("no native bfloat16 here")
    torch.manual_seed(6)
    conv = torch.nn.Conv2d(32, 48, 1, stride=2).to(dtype)
    layer = layers.PackedConv2d(conv, relu=True)
    assert not layer.product and layer.pack_per_shape
    first = (1, 32, 20, 24)
    for shape in [first, (1, 32, 33, 17), first, (2, 32, 18, 18), (1, 32, 5, 7)]:
        x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(layer(x).float(), torch.relu(conv(x)).float(), **tol)
        if min(shape[2:]) >= layers.MIN_PACK_SIDE:
            assert layer.packed_shape == shape
    assert layer.packed_shape == (2, 32, 18, 18)  # a map too small to pack for keeps the last pack


def test_a_layer_first_run_on_a_small_map_packs_for_a_larger_one():
    """A border template's small map does not choose the weight's layout; every shape after it
    gets the same numbers."""
    import fcnfast.engine.layers as layers

    torch.manual_seed(4)
    conv = torch.nn.Conv2d(8, 12, 3, padding=1)
    layer = layers.PackedConv2d(conv, relu=True)
    side = layers.MIN_PACK_SIDE
    for shape in [(1, 8, 3, side // 2), (1, 8, side + 5, 4), (2, 8, side + 1, side + 3)]:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        other = torch.randn(shape[0], 12, *shape[2:]).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(layer(x), torch.relu(conv(x)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.add_relu_(x, other.clone()), torch.relu(conv(x) + other),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.forward_unpadded(x), torch.relu(
            torch.nn.functional.conv2d(x, conv.weight, conv.bias)), rtol=1e-5, atol=1e-5)
    assert layer.packed_shape == (1, 8, side, side) and layer.packed_unpadded is not None
    plain = layer.plain_weight  # narrow maps' plain weight: made once, then reused
    assert plain is not None and plain.layout == torch.strided
    x = torch.randn(1, 8, 3, 5).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(layer(x), torch.relu(conv(x)), rtol=1e-5, atol=1e-5)
    assert layer.plain_weight is plain

def test_large_batches_run_frame_by_frame_with_the_same_result(monkeypatch):
    import fcnfast.engine.engine as engine_module

    monkeypatch.setattr(engine_module, "_BATCHED_PIXELS", 1000)  # these 3×45×67 batches count as large
    model = make_model("fcn8s", learned=True)
    whole = Engine(model, torch.device("cpu"), torch.float32, skip_border=False)
    skipping = Engine(model, torch.device("cpu"), torch.float32)
    for seed in (1, 2):
        pixels = scenes(3, 45, 67, seed=seed)
        l1, s1 = whole.run(pixels, return_scores=True)
        l2, s2 = skipping.run(pixels, return_scores=True)
        assert torch.equal(l1, l2)
        torch.testing.assert_close(s2, s1, rtol=1e-5, atol=1e-6)
    assert [k[0][0] for k in skipping.border._shapes] == [1]  # buffers for one frame only


def test_border_buffers_stay_within_their_memory_budget(monkeypatch):
    from fcnfast.engine import border

    monkeypatch.setattr(border, "MAX_BUFFER_BYTES", 300_000)
    model = make_model("fcn8s")
    whole = Engine(model, torch.device("cpu"), torch.float32, skip_border=False)
    skipping = Engine(model, torch.device("cpu"), torch.float32)
    for seed in (1, 2):
        pixels = scenes(1, 45, 67, seed=seed)
        assert torch.equal(whole.run(pixels), skipping.run(pixels))
    buffers = next(iter(skipping.border._shapes.values())).buffers.values()
    held = [b.numel() * b.element_size() for b in buffers if b is not None]
    assert held and sum(held) <= 300_000


def test_fc_row_tiling_is_exact():
    for arch in ("fcn8s", "fcn_alexnet"):
        model = make_model(arch, learned=True)
        pixels = scenes(1, 70, 90, seed=2)
        whole = Engine(model, torch.device("cpu"), torch.float32)
        tiled = Engine(model, torch.device("cpu"), torch.float32, fc_tile_rows=1)
        l1, s1 = whole.run(pixels, return_scores=True)
        l2, s2 = tiled.run(pixels, return_scores=True)
        torch.testing.assert_close(s2, s1, rtol=1e-5, atol=1e-6)
        assert torch.equal(l1, l2)
        h1, h2 = whole.coarse_scores(whole.network_input(pixels)), tiled.coarse_scores(
            tiled.network_input(pixels))
        assert h1.shape == h2.shape and h1.shape[2] > 1  # really several tiles


def make_scores_overflow(engine, monkeypatch):
    """The engine's coarse scores get an inf: what fp16 overflow in fc6/fc7 looks like."""
    real = engine.coarse_scores

    def overflowing(x):
        h = real(x).clone()
        h[0, 0, 0, 0] = float("inf")
        return h

    monkeypatch.setattr(engine, "coarse_scores", overflowing)


def test_precision_guard_reruns_non_finite_batches_in_float32(monkeypatch):
    model = make_model("fcn8s")
    pixels = scenes(1, 40, 50)
    engine = Engine(model, torch.device("cpu"), torch.bfloat16)
    make_scores_overflow(engine, monkeypatch)
    with pytest.warns(RuntimeWarning, match="non-finite class scores"):
        labels = engine.run(pixels)
    ref = reference_scores(model, pixels)
    assert torch.equal(labels.long(), ref.argmax(1))  # the float32 rerun is exact
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.run(pixels)  # warned once only
        assert torch.equal(engine.run_to_host(pixels).long(), ref.argmax(1))  # the host path too


# What makes the host wait for the device (on CUDA tensors); none may run inside a captured batch.
HOST_SYNCS = ("item", "__bool__", "tolist", "numpy", "__int__", "__float__", "__index__")


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("arch", ["fcn8s", "fcn32s", "fcn_alexnet", "fcn_googlenet", "fcn_resnet50"])
def test_a_batch_reads_nothing_back_from_the_device(arch, backend, monkeypatch):
    """A stand-in for CUDA-graph capture: the engine's batch (preprocess, trunk, head, the guard's
    flag) as on a GPU (no border skipping, no Winograd), after its warm-up, never converts a
    tensor to a Python value — on CUDA that is a host synchronisation, which capture forbids."""
    if backend == "cpp" and "cpp" not in ops.backends():
        pytest.skip("the C++ kernels are not built")
    model = make_model(arch, learned=True)
    engine = Engine(model, torch.device("cpu"), torch.float32, backend=backend, skip_border=False,
                    winograd=False)
    pixels = scenes(2, 45, 61)
    for _ in range(2):  # the warm-up GraphCache does before capturing (checks cached per layer)
        want = engine._run_device(pixels)

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host synchronisation inside a batch: Tensor.{name}")
        return method

    for name in HOST_SYNCS:
        monkeypatch.setattr(torch.Tensor, name, refuse(name))
    got = engine._run_device(pixels)
    monkeypatch.undo()
    assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, want))


def test_run_to_host_gives_run_labels_on_the_host():
    model = make_model("fcn16s", learned=True)
    pixels = scenes(2, 37, 53)
    engine = Engine(model, torch.device("cpu"), torch.float32)
    labels = engine.run_to_host(pixels)
    assert labels.device.type == "cpu" and labels.dtype == engine.label_dtype
    assert torch.equal(labels, engine.run(pixels))


def test_out_of_memory_tiles_then_says_what_to_do(monkeypatch):
    model = make_model("fcn8s")
    pixels = scenes(2, 40, 50)
    engine = Engine(model, torch.device("cpu"), torch.float32)
    calls = []

    def no_memory(p):
        calls.append(engine.fc_tile_rows)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine, "_run_device", no_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.warns(RuntimeWarning, match="row tiles"):
        with pytest.raises(RuntimeError, match=r"2 frame\(s\) of 40×50.*smaller batch_size"):
            engine.run(pixels)
    assert calls == [None, 8]  # tried once whole, once with fc6/fc7 in tiles


def test_auto_falls_back_once_when_a_backend_fails(monkeypatch):
    model = make_model("fcn32s")
    pixels = scenes(1, 20, 30)
    engine = Engine(model, torch.device("cpu"), torch.float32)
    first = engine.op_backends["upsample_crop_argmax"]
    if first == "torch":
        pytest.skip("no kernel backend to fail here")

    def broken(*args, **kwargs):
        raise RuntimeError("kernel failed to launch")

    # The engine binds each op's function at load: break the table's entry, then load.
    monkeypatch.setitem(ops.DISPATCH[first], "upsample_crop_argmax", broken)
    engine = Engine(model, torch.device("cpu"), torch.float32)
    with pytest.warns(RuntimeWarning, match=f"failed on backend '{first}'"):
        labels = engine.run(pixels)
    assert engine.op_backends["upsample_crop_argmax"] != first
    assert torch.equal(labels.long(), reference_scores(model, pixels).argmax(1))
    named = Engine(model, torch.device("cpu"), torch.float32, backend=first)
    with pytest.raises(RuntimeError, match="kernel failed"):
        named.run(pixels)  # a named backend never falls back


def test_named_backend_that_cannot_run_is_refused():
    model = make_model("fcn32s")
    # CPU tensors: refused with or without a GPU.
    with pytest.raises(RuntimeError, match="'cuda' cannot run"):
        fcnfast.Segmenter(model, device="cpu", backend="cuda")
    with pytest.raises(TypeError, match="float64 runs on backend='torch'"):
        Engine(model, torch.device("cpu"), torch.float64)
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        Engine(model, torch.device("cpu"), cuda_graphs=True)
    assert fcnfast.Segmenter(model, device="cpu", dtype=torch.float64).engine is None


def test_check_reports_agreement_and_backends():
    model = make_model("fcn8s", learned=True)
    seg = fcnfast.Segmenter(model, device="cpu")
    report = seg.check()
    assert report.ok and report.firm_agreement >= 0.999 and report.firm_pixels > 0
    assert report.size == (240, 320)
    assert set(report.op_backends) == {"preprocess", "upsample_crop_add", "upsample_crop_argmax"}
    assert "firm pixels" in str(report) and "OK" in str(report)
    img = synthetic_scene(4, 33, 47)[0]
    assert seg.check(img).size == (33, 47)
    with pytest.raises(RuntimeError, match="reference itself"):
        fcnfast.Segmenter(model, device="cpu", backend="torch").check()


# --- GPU ----------------------------------------------------------------------------------------

@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("arch", ARCHS)
def test_gpu_engine_agrees_with_reference(arch, dtype):
    model = make_model(arch, learned=True)
    pixels = scenes(2, 97, 131)
    ref = reference_scores(model, pixels)
    seg = fcnfast.Segmenter(model, device="cuda", dtype=dtype)
    with warnings.catch_warnings():
        if dtype == torch.bfloat16:  # float32's range: fc6/fc7 never overflow, the guard never reruns
            warnings.filterwarnings("error", message=".*non-finite")
        labels = seg.engine.run(pixels.cuda()).cpu()
    assert_firm_agreement(labels, ref, dtype, at_least=0.999)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("backend", ["triton", "cuda", "torch"])
@pytest.mark.parametrize("arch", ["fcn8s", "fcn_alexnet", "fcn_resnet50"])
def test_gpu_named_backends_agree_with_reference(arch, backend):
    model = make_model(arch, learned=True)
    pixels = scenes(1, 61, 89, seed=7)
    seg = fcnfast.Segmenter(model, device="cuda", backend=backend, dtype=torch.float32)
    assert set(seg.op_backends.values()) == {backend}
    assert_firm_agreement(seg.engine.run(pixels.cuda()).cpu(), reference_scores(model, pixels),
                          torch.float32, at_least=1.0)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_run_to_host_one_wait_and_the_guard(dtype, monkeypatch):
    model = make_model("fcn8s", learned=True)
    pixels = scenes(2, 61, 89, seed=3)
    engine = fcnfast.Segmenter(model, device="cuda", dtype=dtype).engine
    dev = pixels.cuda()
    labels = engine.run_to_host(dev)
    assert labels.device.type == "cpu" and torch.equal(labels, engine.run(dev).cpu())
    make_scores_overflow(engine, monkeypatch)
    monkeypatch.setattr(engine, "graphs", None)  # the stand-in is not captured
    with pytest.warns(RuntimeWarning, match="non-finite class scores"):
        labels = engine.run_to_host(dev)
    # the float32 rerun on the GPU (cuDNN may use TF32): firm pixels
    assert_firm_agreement(labels, reference_scores(model, pixels), torch.float32, at_least=0.999)


@pytest.mark.needs_cuda
def test_gpu_cuda_graphs_follow_shape_changes_and_stream_overlaps():
    model = make_model("fcn8s", learned=True)
    seg = fcnfast.Segmenter(model, device="cuda")
    seg.engine.graphs.capacity = 2
    sizes = [(40, 50), (33, 47), (40, 50), (64, 64), (33, 47)]
    for h, w in sizes:
        pixels = scenes(2, h, w, seed=h * w)
        assert_firm_agreement(seg.engine.run(pixels.cuda()).cpu(), reference_scores(model, pixels),
                              seg.dtype)
    assert len(seg.engine.graphs) == 2
    frames = [scenes(1, h, w, seed=i)[0].numpy() for i, (h, w) in enumerate(sizes * 3)]
    streamed = list(seg.stream(frames, batch_size=2))
    for got, frame in zip(streamed, frames):
        np.testing.assert_array_equal(got, seg.segment(frame))
    on_gpu = list(seg.stream([torch.from_numpy(f).cuda() for f in frames[:4]], batch_size=2))
    for got, frame in zip(on_gpu, frames):
        assert got.is_cuda
        np.testing.assert_array_equal(got.cpu().numpy(), seg.segment(frame))


def test_graph_cache_keys_by_shape_evicts_oldest_and_returns_copies(monkeypatch):
    """The CUDA-graph cache's bookkeeping, with a CPU stand-in for capture and replay."""
    from fcnfast.engine import graphs

    class FakeGraph:  # "capture" records the function; "replay" reruns it on the static input
        def replay(self):
            out = self.fn(self.static_in)
            for dst, src in zip(self.static_out, out):
                dst.copy_(src)

    captures = []

    class FakeCapture:
        def __init__(self, graph, pool=None):
            self.graph = graph

        def __enter__(self):
            captures.append(self.graph)

        def __exit__(self, *exc):
            return False

    class FakeStream:
        def __init__(self, device=None):
            pass

        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", FakeCapture)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: __import__("contextlib").nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: object())

    def fn(x):
        return (x * 2, x.sum())

    cache = graphs.GraphCache(fn, capacity=2)
    real_capture = cache._capture

    def capture(example):
        graph, static_in, static_out = real_capture(example)
        graph.fn, graph.static_in, graph.static_out = fn, static_in, static_out
        return graph, static_in, static_out

    cache._capture = capture
    a, b, c = torch.ones(2, 3), torch.arange(4.0).view(1, 4), torch.ones(5)
    out = cache.run(a)
    assert torch.equal(out[0], a * 2) and len(captures) == 1
    out2 = cache.run(a + 1)  # same shape: replay, new values, earlier result untouched
    assert torch.equal(out2[0], (a + 1) * 2) and torch.equal(out[0], a * 2) and len(captures) == 1
    cache.run(b)
    cache.run(a)  # a is now the most recent
    cache.run(c)  # evicts b
    assert len(cache) == 2 and len(captures) == 3
    cache.run(b)  # recaptured
    assert len(captures) == 4
    with pytest.raises(ValueError, match="graph_cache_size"):
        graphs.GraphCache(fn, capacity=0)


@pytest.mark.parametrize("named", [False, True], ids=["default", "cuda_graphs=True"])
def test_a_failed_graph_capture_falls_back_to_uncaptured_runs_unless_named(named):
    """By default a capture that fails (a kernel that cannot be captured) warns once and the
    engine runs uncaptured from then on, with the same labels; cuda_graphs=True raises instead.
    A CPU stand-in for the graph cache."""
    model = make_model("fcn_alexnet")
    engine = Engine(model, torch.device("cpu"), torch.float32)
    pixels = scenes(1, 23, 31, seed=5)
    want = engine.run(pixels)

    class FailingCapture:
        def run(self, x):
            raise RuntimeError("operation not permitted when stream is capturing")

    engine.graphs, engine._graphs_named = FailingCapture(), named
    if named:
        with pytest.raises(RuntimeError, match="capturing"):
            engine.run(pixels)
        return
    with pytest.warns(RuntimeWarning, match="capture failed"):
        assert torch.equal(engine.run(pixels), want)
    assert engine.graphs is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(engine.run(pixels), want)  # no second warning


def test_a_repeated_shapes_template_reaches_past_pools_and_lrn():
    """Pools and LRNs cost time though no multiply-adds: the template's depth counts them, so
    GoogLeNet's border buffers reach its conv2 LRN and pool2 (before, they ran whole)."""
    from fcnfast.engine import border

    net = inference_copy(build_model("fcn_googlenet", CLASSES).eval(), torch.device("cpu"), torch.float32)
    steps = border._chain_plan(border._leaves(net, net.trunk_chain), (1, 3, 300, 451), 4)
    last, _ = border._choose_template(steps, border.REPEATED_FRAMES)
    assert steps[last].name == "pool2.3x3_s2"
    assert {s.name for s in steps if s.buffered} >= {"conv2.norm2", "pool2.3x3_s2", "pool1.norm1"}


def test_counts_met_remembers_a_folder_of_recurring_sizes():
    """A size met again after a few dozen others still counts as met (it then runs its own exact
    kernels); past ``remembered`` distinct counts the memory starts over."""
    from fcnfast.engine.layers import CountsMet

    met = CountsMet()
    assert all(met.first_time(n) for n in range(50))
    assert not any(met.first_time(n) for n in range(50))
    small = CountsMet(remembered=3)
    assert [small.first_time(n) for n in (1, 2, 3, 1, 4, 1)] == [True, True, True, False, True, True]

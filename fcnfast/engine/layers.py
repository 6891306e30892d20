"""The engine's copy of a reference model, rewritten for inference speed.

The copy keeps the reference's module names and classes, so it still describes itself to the
engine (``run_trunk``, ``head_plan``, ``trunk_chain``); only its layers change:
- BatchNorm is folded into the convolution before it (ResNet, FCNHead);
- weights and activations are in the compute dtype and channels-last;
- on CPU every convolution is a oneDNN convolution with its weight reordered once into oneDNN's
  blocked layout (instead of on every call, which for fc6's 100M weights costs more than the
  convolution itself at small sizes) and the ReLU that follows fused into it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.resnet import Bottleneck
from .. import ops
from .precision import cpu_bf16_native

_mkldnn = torch.ops.mkldnn


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution equal to ``bn(conv(x))`` in inference mode (running statistics)."""
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused.weight = nn.Parameter(conv.weight.detach() * scale.view(-1, 1, 1, 1), requires_grad=False)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach(), requires_grad=False)
    return fused


def _fold_all_batchnorms(model: nn.Module) -> None:
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            kids = list(parent._modules.items())
            for (cname, conv), (bname, bn) in zip(kids, kids[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    parent._modules[cname] = fold_batchnorm(conv, bn)
                    parent._modules[bname] = nn.Identity()
        # ResNet blocks name their pairs conv1/bn1, conv2/bn2, ...
        for i in range(1, 4):
            conv, bn = getattr(parent, f"conv{i}", None), getattr(parent, f"bn{i}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, f"conv{i}", fold_batchnorm(conv, bn))
                setattr(parent, f"bn{i}", nn.Identity())


_PACKED_ANY_SHAPE_MAX_WEIGHT = 4 << 20  # elements (ResNet's largest 1×1 layer: 2M; fc7: 16M)
# The weight's layout is chosen for the first input, enlarged to at least this many pixels a side,
# and separately for unpadded calls (a border core with its halo). oneDNN wants another layout
# for a map narrower than this (a border template's 7×8) and, given a packed weight, reorders
# it on every call — blocked to blocked, slowly (AlexNet's conv3/conv4: 9× a whole layer on an
# AVX-512 EPYC; benchmarks/RESULTS.md) — so such maps get the plain weight back instead, which
# it reorders fast, with the same result.
MIN_PACK_SIDE = 16
# A bfloat16 matrix product with few rows for its weight (fc7 at a photo's 10×15 outputs: 150 rows
# of 4096 against 4096²) runs a row count it has not met before rounded up to a multiple of this:
# oneDNN creates a kernel for every new row count (fc7's was the largest single cost of a new
# image size), and the rounded counts repeat across sizes. A count met again runs as it is (its
# own kernel, created then; the padding costs its rows' share of the product). Layers with
# many rows never pad: the copy would cost more.
WEIGHT_BOUND_ROW_STEP = 64


def product_rows(rows: int, out_channels: int) -> int:
    """The row count a 1×1 layer's matrix product runs ``rows`` met for the first time as."""
    if rows * 4 > out_channels:
        return rows
    return -(-rows // WEIGHT_BOUND_ROW_STEP) * WEIGHT_BOUND_ROW_STEP


class CountsMet:
    """The row (or tile) counts a layer has run, the last few: a count met for the first time
    (a photo of a new size) may run rounded up to a count shared with other sizes, whose oneDNN
    kernel exists; one met again (a video's frames) runs as it is. Set operations only, so
    threads sharing a layer at worst round once more. A folder whose sizes recur among a few dozen
    meets each again after the others: ``remembered`` keeps that many (benchmarks/RESULTS.md)."""

    def __init__(self, remembered: int = 64):
        self.remembered = remembered
        self.seen = set()

    def first_time(self, count: int) -> bool:
        if count in self.seen:
            return False
        if len(self.seen) >= self.remembered:
            self.seen.clear()
        self.seen.add(count)
        return True


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` channels-last with channels-last strides even where the map is 1×1: there
    ``contiguous`` keeps plain strides, oneDNN then takes the tensor for a plain one and the
    fused residual add of a bfloat16 convolution falls back to an op without bfloat16."""
    t = t.contiguous(memory_format=torch.channels_last)
    n, c, h, w = t.shape
    if h * w == 1 and t.stride(3) != c:
        t = t.as_strided(t.shape, (c, 1, c, c))
    return t


class PackedConv2d(nn.Module):
    """A Conv2d (and optionally the ReLU after it) as one oneDNN call with a pre-reordered weight.

    The reorder needs an input shape to choose the layout; it is done at the first call, and the
    packed weight gives exact results for every other shape too (oneDNN reorders internally if
    needed).
    """

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        self.register_buffer("weight", conv.weight.detach())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach())
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.attr = "relu" if relu else "none"
        self.packed = self.packed_unpadded = None
        self.plain_weight = None  # a small weight's plain copy, for maps too narrow to pack for
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = conv.kernel_size
        # oneDNN's convolution, given a weight packed for another input shape, may reorder it on
        # every call (FCN's fc7 at a new image size: 100× slower). A 1×1 layer is a matrix
        # product over the channels-last pixels, whose packed weight serves any row count: a
        # large one (fc7) always runs as that, oneDNN's matmul (as fast as its packed convolution
        # at the packed shape, and in float32 faster than torch's GEMM on the Zen 4 measured).
        # So does every float32 one: oneDNN's float32 1×1 convolution picks its weight layout per
        # shape (re-packing at every new size: a folder of photos is all new shapes); the matmul
        # is as fast on repeated shapes. Small bfloat16 ones keep the convolution (one layout at every shape,
        # and a few percent faster steady than the product; benchmarks/RESULTS.md).
        self.small_weight = self.weight.numel() <= _PACKED_ANY_SHAPE_MAX_WEIGHT
        pointwise = (tuple(conv.kernel_size) == (1, 1) and self.stride == [1, 1]
                     and self.padding == [0, 0] and self.groups == 1)
        # oneDNN's float32 convolution of a large window over few output pixels (fc6 at a photo's
        # 14×9 outputs) is bound by its weight, and on an AVX2-only CPU runs many times slower than
        # the same product as a matrix multiplication over the unfolded windows (im2col), which
        # oneDNN's matmul runs at its GEMM's speed; with AVX-512 the product is as fast (AlexNet's)
        # or faster (VGG's; benchmarks/RESULTS.md). So a float32 one runs as that product, like a
        # 1×1 layer. Not a 3×3 one: FCN-ResNet's head (2048→512, over many more pixels) ran 1.3×
        # slower so where it was not Winograd.
        self.windowed = (not pointwise and not self.small_weight and self.weight.dtype == torch.float32
                         and self.groups == 1 and self.dilation == [1, 1] and min(self.kernel_size) > 3)
        self.product = self.windowed or (
            pointwise and (not self.small_weight or self.weight.dtype == torch.float32))
        self.product_packed = None
        self.rows_met = CountsMet()  # of the product (see WEIGHT_BOUND_ROW_STEP)
        # oneDNN's float32 matmul creates no kernel per row count (a new count's first call is as
        # fast as its later ones, with AVX2 and with AVX-512: benchmarks/RESULTS.md), so rounding
        # a float32 count up would only add rows.
        self.rounds_new_counts = self.weight.dtype != torch.float32
        self.packed_shape = None
        # A strided 1×1 layer (ResNet's downsampling) stays a convolution, packed again when its
        # shape changes (a fast reorder, once) rather than run through oneDNN's slow reorder of a
        # pack made for another shape on every call: 2× the layer in float32, up to 60× in
        # bfloat16. Other convolutions keep their first pack: packing every one again at every new
        # size cost a folder of photos more than the stale packs do (benchmarks/RESULTS.md).
        self.pack_per_shape = tuple(conv.kernel_size) == (1, 1) and self.stride != [1, 1] and not self.product

    def _pack(self, x: torch.Tensor, unpadded: bool = False):
        """(``x`` channels-last, the weight to run it with): packed for calls like this one
        (padded or not), packing it now if this is the first."""
        x = channels_last(x)
        packed = self.packed_unpadded if unpadded else self.packed
        n, c, h, w = x.shape
        narrow = min(h, w) < MIN_PACK_SIDE and self.small_weight  # runs the plain weight
        shape = (n, c, max(h, MIN_PACK_SIDE), max(w, MIN_PACK_SIDE))
        stale = (packed is not None and self.pack_per_shape and not unpadded and not narrow
                 and shape != self.packed_shape)
        if packed is None or stale:
            weight = self.weight
            if weight is None:  # packed before: for another shape, or by the other kind of call
                weight = (self.packed if self.packed is not None else self.packed_unpadded).to_dense()
            packed = _mkldnn._reorder_convolution_weight(
                weight, [0, 0] if unpadded else self.padding, self.stride, self.dilation, self.groups,
                list(shape))
            if unpadded:
                self.packed_unpadded = packed
            else:
                self.packed, self.packed_shape = packed, shape
            self.weight = None  # the packed copies are the only ones used from now on (fc6: 200 MB)
        if narrow:  # small by definition: kept, not converted back at every call
            if self.plain_weight is None:
                self.plain_weight = packed.to_dense()
            return x, self.plain_weight
        return x, packed

    def _product_input(self, x: torch.Tensor, padded: bool = True):
        """(the rows of the product computing conv(x), zero past the output's ``m`` pixels; ``m``;
        the output's (N, H, W)). A windowed layer takes ``x`` as already padded unless ``padded``."""
        x = x.contiguous(memory_format=torch.channels_last)
        n, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1)
        if self.windowed:
            (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
            if padded and (ph or pw):
                pixels = F.pad(pixels, (0, 0, pw, pw, ph, ph))
            if pixels.shape[1] < kh or pixels.shape[2] < kw:
                raise ValueError(f"PackedConv2d: a {tuple(pixels.shape[1:3])} map (padded) is smaller "
                                 f"than the {kh}×{kw} window")
            windows = pixels.unfold(1, kh, sh).unfold(2, kw, sw)  # (N, OH, OW, C, kh, kw)
            h, w = windows.shape[1:3]
        m = n * h * w
        new_count = self.rounds_new_counts and self.rows_met.first_time(m)
        run = product_rows(m, self.out_channels) if new_count else m
        if not self.windowed:
            rows = pixels.reshape(m, c)
            return (rows if run == m else F.pad(rows, (0, 0, 0, run - m))), m, (n, h, w)
        rows = x.new_empty(run, kh * kw * c)
        rows[m:].zero_()
        # One copy, straight into the rows, ordered (kh, kw, C) like the packed weight's columns.
        rows[:m].view(n, h, w, kh, kw, c).copy_(windows.permute(0, 1, 2, 4, 5, 3))
        return rows, m, (n, h, w)

    def _matmul(self, x: torch.Tensor, attr: str = "none", padded: bool = True) -> torch.Tensor:
        """conv(x) of a layer run as a matrix product (then ``attr``), channels-last
        (N, C, H, W) like oneDNN's: over the pixels for a 1×1 layer, over the unfolded windows
        (im2col) for a windowed one."""
        rows, m, (n, h, w) = self._product_input(x, padded)
        if self.product_packed is None:
            # Columns ordered like the rows: (kh, kw, C); a 1×1 layer's are just C.
            weight = self.weight.permute(0, 2, 3, 1).reshape(self.out_channels, -1)
            self.product_packed = _mkldnn._reorder_linear_weight(weight, rows.shape[0])
            self.weight = None  # the packed copy is the only one used from now on
        y = _mkldnn._linear_pointwise(rows, self.product_packed, self.bias, attr, [], "")
        return y[:m].view(n, h, w, self.out_channels).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.product:
            return self._matmul(x, self.attr)
        x, weight = self._pack(x)
        return _mkldnn._convolution_pointwise(x, weight, self.bias, self.padding, self.stride,
                                              self.dilation, self.groups, self.attr, [], "")

    def forward_unpadded(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` taken as already padded (a slice with its halo)."""
        if not any(self.padding):
            return self.forward(x)
        if self.product:
            return self._matmul(x, self.attr, padded=False)
        x, weight = self._pack(x, unpadded=True)
        return _mkldnn._convolution_pointwise(x, weight, self.bias, [0, 0], self.stride,
                                              self.dilation, self.groups, self.attr, [], "")

    def add_relu_(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """other ← relu(conv(x) + other) (a residual block's end), in place: no new buffer for
        the block's output. A convolution does it in one oneDNN call; a product adds and
        rectifies in place after it."""
        other = channels_last(other)
        if self.product:
            return other.add_(self._matmul(x)).relu_()
        x, weight = self._pack(x)
        return _mkldnn._convolution_pointwise_.binary(
            other, x, weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            "add", None, "relu", [], "")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, fused={self.attr}")


def window_geometry(layer: nn.Module):
    """(kernel, stride, padding, dilation) of a square-windowed conv or max pool; None otherwise."""
    conv = isinstance(layer, (PackedConv2d, nn.Conv2d)) and not isinstance(layer.padding, str)
    if not (conv or isinstance(layer, nn.MaxPool2d)):
        return None
    pairs = [(v, v) if isinstance(v, int) else tuple(v)
             for v in (layer.kernel_size, layer.stride, layer.padding, layer.dilation)]
    if any(a != b for a, b in pairs):
        return None
    return tuple(int(a) for a, _ in pairs)


def _packable(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _runs_in_order(parent: nn.Module):
    """Groups of child names that ``parent.forward`` applies one after another: a Sequential's
    children, or what the module says of itself (``layer_chains``, see ``models.FCNBase``)."""
    if isinstance(parent, nn.Sequential):
        yield list(parent._modules)
    chains = getattr(parent, "layer_chains", None)
    if callable(chains):
        yield from chains()


def _pack_convolutions(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for names in _runs_in_order(parent):
            for i, name in enumerate(names):
                conv = parent._modules.get(name)
                if not _packable(conv):
                    continue
                # The next layer that does something (a folded BatchNorm left an Identity).
                later = [n for n in names[i + 1:] if not isinstance(parent._modules.get(n), nn.Identity)]
                nxt = later[0] if later else None
                relu = nxt is not None and isinstance(parent._modules.get(nxt), nn.ReLU)
                parent._modules[name] = PackedConv2d(conv, relu)
                if relu:
                    parent._modules[nxt] = nn.Identity()
    # Convolutions outside ordered chains (ResNet blocks, head layers) are packed without fusion.
    replace_modules(model, _packable, lambda conv: PackedConv2d(conv, relu=False))
    replace_modules(model, lambda m: isinstance(m, Bottleneck), PackedBottleneck)


class PackedBottleneck(nn.Module):
    """A ResNet bottleneck of packed convolutions: ReLUs fused into conv1/conv2, and conv3 + the
    residual add + ReLU in one oneDNN call (its BatchNorms are already folded)."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = block.conv1, block.conv2, block.conv3
        self.conv1.attr = self.conv2.attr = "relu"
        self.downsample = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without a downsample the sum overwrites x itself: nothing reads a block's input after
        # the block (layer3's output, which the backbone also returns, feeds a downsampling block).
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv3.add_relu_(self.conv2(self.conv1(x)), identity)


class NativeLRN(nn.LocalResponseNorm):
    """A cross-channel LRN as one native pass over a channels-last map (float32 arithmetic, like
    the reference's CaffeLRN), instead of torch's pad + avg_pool3d + pow + div in float32 copies."""

    def __init__(self, lrn: nn.LocalResponseNorm):
        super().__init__(lrn.size, alpha=lrn.alpha, beta=lrn.beta, k=lrn.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.lrn(x, self.size, self.alpha, self.beta, self.k)


def replace_modules(model: nn.Module, wanted, make) -> int:
    """Every submodule of ``model`` for which ``wanted(module)`` holds replaced, in place, by
    ``make(module)``; how many were."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and wanted(child):
                parent._modules[name] = make(child)
                count += 1
    return count


def mkldnn_usable() -> bool:
    return torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available()


def _packs(dtype: torch.dtype) -> bool:
    """oneDNN reorders weights for float32 always, for bfloat16 where the CPU computes it (the
    float16 path needs AVX512-FP16 / AVX-NE-CONVERT; eager convolutions handle it elsewhere)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_bf16_native())


def inference_copy(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The reference model rewritten for inference on ``device`` in ``dtype`` (see module doc)."""
    with torch.no_grad():
        net = copy.deepcopy(model).eval()
        _fold_all_batchnorms(net)
        net = net.to(device=device, dtype=dtype, memory_format=torch.channels_last)
        for p in net.parameters():
            p.requires_grad_(False)
        if device.type == "cpu" and mkldnn_usable() and _packs(dtype):
            _pack_convolutions(net)
        if device.type == "cpu" and ops.lrn_available():
            replace_modules(net, lambda m: isinstance(m, nn.LocalResponseNorm), NativeLRN)
    return net

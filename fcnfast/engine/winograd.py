"""3×3 convolutions as Winograd F(m×m, 3×3) on the CPU: F(4×4, 3×3) in float32 (4× fewer
multiply-adds than the direct convolution), F(2×2, 3×3) in bfloat16 (2.25×; the larger tile's
transforms lose too much in bfloat16's 8-bit mantissa: benchmarks/RESULTS.md). The per-tile-point
products are one call: a batched matrix product, or for layers of 256 channels and more, unless
the batched one measures clearly faster at load, oneDNN's 1×1 convolution of one group per point
over the tiles (faster on the AVX-512 Zen 4 and Zen 5, slower with AMX: benchmarks/RESULTS.md;
in bfloat16 only for SHARED_PACK_MIN_ROWS rows and more). Where the CPU has AVX-512 BF16, a
bfloat16 layer of up to FUSED_MAX_WEIGHT weights runs instead in one native pass
(csrc/cpu/winograd_bf16.cpp: tiles transformed, multiplied and transformed back while they are in
the core's cache), unless the separate calls measure clearly faster at load. A grouped layer
(AlexNet's conv4 and conv5) runs one such layer per group.

The transforms are native kernels (csrc/cpu/winograd.cpp, csrc/winograd.h); the filter's
U = G g Gᵀ is computed here once per layer, in float64, then rounded to the compute dtype. A
dilated convolution splits into its d×d phases inside the tiling, so ResNet's dilation-2 and -4
layers need no reshuffle. Products are accumulated in float32 by oneDNN and rounded to the
compute dtype once before the output transform: the error stays within the bf16 tolerance of the
engine (tests/test_winograd.py measures it against the float64 convolution).
"""
from __future__ import annotations

import functools
import threading

import torch

from .. import ops
from . import calibrate
from .layers import CountsMet, PackedConv2d, replace_modules

# G of F(m×m, 3×3) by m, U = G g Gᵀ, from the interpolation points of csrc/winograd.h's Bᵀ and Aᵀ:
# 0, 1, −1, ∞ (Lavin & Gray) and 0, 1, −1, 1/2, −2, ∞.
_G = {
    2: torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
                    dtype=torch.float64),
    4: torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [-1 / 3, 1 / 3, -1 / 3],
                     [-16 / 15, -8 / 15, -4 / 15], [1 / 15, -2 / 15, 4 / 15], [0.0, 0.0, 1.0]],
                    dtype=torch.float64),
}
# Narrow layers run faster direct: their GEMMs are too small for the transforms to pay
# (benchmarks/RESULTS.md, issue 15).
MIN_CHANNELS = 128
# In the pad-100 nets (VGG) computing in bfloat16 only layers this wide (in, out) take it by
# default: there F(2×2)'s narrower layers ran as fast direct on the AMX Xeon, and their direct
# kernels were not the cost of a new size that the wide ones' were; float32's F(4×4) pays from
# MIN_CHANNELS there too. Elsewhere (ResNet) a narrower bfloat16 layer is timed against its direct
# convolution at load (``direct_faster``) (benchmarks/RESULTS.md, issue 15).
WIDE_CHANNELS = (256, 512)
# The GEMM's rows are the tile count rounded up to this: oneDNN builds a matmul kernel for every new
# shape (milliseconds each), which a folder of photos of many sizes would otherwise pay on every
# image; rounding makes the shapes repeat, at the price of a few rows of zeros. A tile count met
# for the first time rounds coarser (``new_size_rows``: an eighth of its size at most), so that
# sizes share kernels more often; one met again rounds to this (the padding rows cost their share
# of the products where they are slow, as on the Zen 4: benchmarks/RESULTS.md).
ROW_STEP = 16
# Layers at least this wide on both sides may take the grouped 1×1 convolution for their products.
GROUPED_MIN_CHANNELS = 256
# In bfloat16 a grouped product's weight packed for one row count of at least this many serves
# every other such count; fewer rows take the batched product (GroupedProducts).
SHARED_PACK_MIN_ROWS = 192
# The one-pass bfloat16 layer (ops.winograd_bf16_conv) for layers of at most this many filter
# weights (C·K): each block of tiles reads its filter transform again, from the shared cache up to
# about this size (ResNet's 512² layers), from memory above it (its 2048→512 head: slower there).
FUSED_MAX_WEIGHT = 512 * 512
# A layer's two ways of computing its products, and a narrow layer's Winograd and direct convolution,
# are timed at load on a map this size, a 451×300 frame's at stride 8 (where ResNet's 3×3 layers run;
# which way wins changes with the size).
_MEASURED_MAP = (38, 57)


def gemm_rows(tiles: int) -> int:
    """The row count of the tile buffers (and of the GEMM) for ``tiles`` tiles met before."""
    return -(-tiles // ROW_STEP) * ROW_STEP


def new_size_rows(tiles: int) -> int:
    """The row count for a tile count met for the first time: a multiple of the power of two
    an eighth to a sixteenth of it (and of ROW_STEP)."""
    step = max(ROW_STEP, 1 << max(0, tiles.bit_length() - 4))
    return -(-tiles // step) * step


available = ops.winograd_available


def eligible(conv: PackedConv2d) -> bool:
    """A stride-1 3×3 'same' convolution (padding = dilation), wide enough to pay, in a dtype the
    kernels take, not yet packed."""
    return (type(conv) is PackedConv2d and tuple(conv.kernel_size) == (3, 3)
            and conv.stride == [1, 1] and conv.groups == 1
            and conv.padding[0] == conv.padding[1] == conv.dilation[0] == conv.dilation[1]
            and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS
            and conv.weight is not None and conv.weight.dtype in ops.WINOGRAD_DTYPES
            and conv.weight.device.type == "cpu")


def eligible_grouped(conv: PackedConv2d, pays=None) -> bool:
    """A grouped layer (AlexNet's conv4 and conv5) each of whose groups is ``eligible`` (and for
    which ``pays``, if given)."""
    if not (type(conv) is PackedConv2d and conv.groups > 1 and conv.weight is not None):
        return False
    group = _group(conv, 0)
    return eligible(group) and (pays is None or pays(group))


def _group(conv: PackedConv2d, i: int) -> PackedConv2d:
    """Group ``i`` of a grouped packed layer as a packed layer of its own (same geometry, ReLU)."""
    g, w = conv.groups, conv.weight
    part = torch.nn.utils.skip_init(torch.nn.Conv2d, conv.in_channels // g, conv.out_channels // g,
                                    conv.kernel_size, padding=conv.padding, dilation=conv.dilation,
                                    bias=conv.bias is not None, dtype=w.dtype)
    part.requires_grad_(False)
    part.weight.copy_(w.chunk(g)[i])
    if conv.bias is not None:
        part.bias.copy_(conv.bias.chunk(g)[i])
    return PackedConv2d(part, relu=conv.attr == "relu")


def wide(conv: PackedConv2d) -> bool:
    """At least WIDE_CHANNELS (in, out): F(2×2) paid there on every CPU measured."""
    return conv.in_channels >= WIDE_CHANNELS[0] and conv.out_channels >= WIDE_CHANNELS[1]


def tile_for(dtype: torch.dtype) -> int:
    """The Winograd tile (outputs per side) a layer computing in ``dtype`` uses."""
    return 4 if dtype == torch.float32 else 2


def filter_transform(weight: torch.Tensor, tile: int = 2) -> torch.Tensor:
    """(K, C, 3, 3) → U (P, C, K) of F(tile×tile, 3×3) in the weight's dtype, P = (tile + 2)²
    points, point (tile + 2)·a + b."""
    g = _G[tile]
    u = torch.einsum("ai,kcij,bj->abck", g, weight.double(), g)
    return u.reshape(-1, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


@functools.lru_cache(maxsize=None)
def grouped_products_faster(c: int, k: int, dtype: torch.dtype, tile: "int | None" = None) -> bool:
    """Whether this CPU runs a C→K layer of F(tile×tile, 3×3) (None: ``tile_for`` the dtype) at
    least as fast with its products as the grouped 1×1 convolution as with the batched matrix product:
    measured once per process and shape, as whole layers (the two take their tiles in different
    layouts, which the transforms write at different speeds: benchmarks/RESULTS.md)."""
    if min(c, k) < GROUPED_MIN_CHANNELS:
        return False
    conv, x = _measured_layer(c, k, 1, dtype)
    with torch.no_grad():
        batched, grouped = (WinogradConv2d(PackedConv2d(conv, relu=True), grouped=g, tile=tile,
                                           direct_when_met=False, fused=False) for g in (False, True))
        # The grouped one unless the batched one is clearly faster: timed alone the two came
        # within a few percent where inside a whole net the batched ones ran slower
        # (benchmarks/RESULTS.md).
        return not calibrate.second_faster(lambda: grouped(x), lambda: batched(x))


def _measured_layer(c: int, k: int, dilation: int, dtype: torch.dtype):
    """A C→K 3×3 'same' layer of this dilation (constant weights) and a _MEASURED_MAP input for it."""
    conv = torch.nn.utils.skip_init(torch.nn.Conv2d, c, k, 3, padding=dilation, dilation=dilation,
                                    dtype=dtype)
    conv.requires_grad_(False)
    conv.weight.fill_(0.01)
    conv.bias.zero_()
    x = torch.full((1, c, *_MEASURED_MAP), 0.5, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return conv, x


@functools.lru_cache(maxsize=None)
def direct_faster(c: int, k: int, dilation: int, dtype: torch.dtype) -> bool:
    """Whether this CPU runs a C→K 3×3 layer (of this dilation) clearly faster as the direct
    convolution than as Winograd, at a size met before: measured once per process and shape."""
    conv, x = _measured_layer(c, k, dilation, dtype)
    with torch.no_grad():
        direct = PackedConv2d(conv, relu=True)
        winograd = WinogradConv2d(PackedConv2d(conv, relu=True), direct_when_met=False, fused=False)
        return calibrate.second_faster(lambda: winograd(x), lambda: direct(x))


def fusable(c: int, k: int, dtype: torch.dtype, tile: int) -> bool:
    """Whether a C→K layer may run as the one-pass bfloat16 layer here (``ops.winograd_bf16_conv``:
    AVX-512 BF16; F(2×2); a filter transform U of at most FUSED_MAX_WEIGHT elements a point, which
    every block of tiles reads again)."""
    return (dtype == torch.bfloat16 and tile == 2 and c * k <= FUSED_MAX_WEIGHT
            and ops.winograd_bf16_shape_ok(c, k) and ops.winograd_bf16_available())


@functools.lru_cache(maxsize=None)
def fused_faster(c: int, k: int, dilation: int, dtype: torch.dtype, tile: "int | None" = None) -> bool:
    """Whether a C→K layer (of this dilation) runs here as the one-pass bfloat16 layer unless the
    separate transforms and products (with their own choices: grouped or batched, direct when
    met) measure clearly faster as whole layers, at a size met before: once per process and shape.
    The one-pass layer is the default: it makes no oneDNN kernel for a new size and keeps its
    tiles in the core's cache, which timing one layer alone does not show (benchmarks/RESULTS.md)."""
    tile = tile_for(dtype) if tile is None else tile
    if not fusable(c, k, dtype, tile):
        return False
    conv, x = _measured_layer(c, k, dilation, dtype)
    with torch.no_grad():
        fused, separate = (WinogradConv2d(PackedConv2d(conv, relu=True), fused=f, tile=tile)
                           for f in (True, False))
        return not calibrate.second_faster(lambda: fused(x), lambda: separate(x))


class GroupedProducts:
    """M[t, q] = V[t, q] · U[q] for V (rows, P, C) as a 1×1 convolution of P groups over the rows
    (U: (P, C, K)).

    In float32 oneDNN lays the weight out by the row count, and reorders a weight packed for
    another layout on every call, slowly, so the weight is packed again whenever the row count
    changes, from a plain copy kept for that. In bfloat16 one layout serves every row count of at
    least SHARED_PACK_MIN_ROWS (a pack made for one runs as fast at any other) and packing a wide
    layer costs as much as a call: it is packed once; below that count oneDNN lays it out
    otherwise, and a stale pack ran up to 500× slower (``serves``: such counts take the batched
    product; benchmarks/RESULTS.md)."""

    def __init__(self, u: torch.Tensor):
        self.points, self.c, self.k = u.shape
        self.weight = u.permute(0, 2, 1).reshape(self.points * self.k, self.c, 1, 1).contiguous()
        self.pack = None  # (rows, packed weight), swapped whole: threads see a consistent pair
        self.pack_per_row_count = u.dtype == torch.float32

    def serves(self, rows: int) -> bool:
        """Whether a call of this many rows runs here (else: the batched product)."""
        return self.pack_per_row_count or rows >= SHARED_PACK_MIN_ROWS

    def batched_operand(self) -> torch.Tensor:
        """U (P, C, K) for a batched matrix product, a view of the plain copy (oneDNN's matmul
        takes it transposed as fast)."""
        return self.weight.view(self.points, self.k, self.c).transpose(1, 2)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        rows = v.shape[0]
        # (1, PC, rows, 1) channels-last
        points = v.view(1, rows, 1, self.points * self.c).permute(0, 3, 1, 2)
        pack = self.pack
        if pack is None or (pack[0] != rows and self.pack_per_row_count):
            pack = self.pack = (rows, torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, [0, 0], [1, 1], [1, 1], self.points, list(points.shape)))
        m = torch.ops.mkldnn._convolution_pointwise(points, pack[1], None, [0, 0], [1, 1], [1, 1],
                                                    self.points, "none", [], "")
        return (m.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
                .view(rows, self.points, self.k))

    def __getstate__(self):
        """Copies and pickles: oneDNN's packed tensors have no storage to copy; the copy packs
        again at its first call."""
        return {**self.__dict__, "pack": None}


class Workspace:
    """The V and M tile buffers of a net's Winograd layers, shared by all of them (they run one
    after another), one pair per thread. Kept between calls and grown to the largest layer seen:
    fresh memory page-faults on every first touch, which a new image size would otherwise pay in
    every layer. Copies and pickles get their own, empty."""

    def __init__(self):
        self._local = threading.local()

    def buffers(self, rows: int, c: int, k: int, dtype: torch.dtype, by_point: bool = True,
                points: int = 16):
        """(V, M) of ``dtype``, views of this thread's buffers: (points, rows, c) and (points, rows,
        k) when ``by_point`` (a batched GEMM's operands), else V (rows, points, c) and no M (the
        grouped convolution makes its own). Rows past a call's tiles hold what earlier calls left there
        (zeros at first): they only ever reach rows of M that the output transform does not read."""
        bufs = getattr(self._local, "bufs", None)
        need = (points * rows * c, points * rows * k if by_point else 0)
        have = (0, 0) if bufs is None or bufs[0].dtype != dtype else (bufs[0].numel(), bufs[1].numel())
        if have[0] < need[0] or have[1] < need[1]:
            bufs = tuple(torch.zeros(max(n, h), dtype=dtype) for n, h in zip(need, have))
            self._local.bufs = bufs
        if not by_point:
            return bufs[0][:need[0]].view(rows, points, c), None
        return bufs[0][:need[0]].view(points, rows, c), bufs[1][:need[1]].view(points, rows, k)

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._local = threading.local()


class WinogradConv2d(PackedConv2d):
    """A PackedConv2d (same geometry, same ReLU fusion) computed as Winograd F(tile×tile, 3×3)
    (None: ``tile_for`` its dtype), its tile buffers from ``workspace`` (shared with the net's
    other Winograd layers; its own if None), its products grouped or batched as ``grouped`` says
    (None: whichever measures faster here), or all of it in one native pass when ``fused`` (None:
    where ``fused_faster`` says so and ``grouped`` was not named).

    ``direct_when_met``: a size met before runs the direct convolution instead (None: where a
    bfloat16 layer narrower than WIDE_CHANNELS measures clearly faster so, ``direct_faster``; with
    AMX a direct 128- or 256-channel convolution runs at the GEMM rate and F(2×2)'s transforms
    cost more than its products save). A size met for the first time still runs Winograd: its
    products share oneDNN kernels between sizes (``new_size_rows``), where a direct convolution
    creates one for every new shape, at a few times its run's cost."""

    def __init__(self, conv: PackedConv2d, workspace: "Workspace | None" = None,
                 grouped: "bool | None" = None, tile: "int | None" = None,
                 direct_when_met: "bool | None" = None, fused: "bool | None" = None):
        if not eligible(conv):
            raise ValueError(f"not a Winograd-eligible 3×3 convolution: {conv}")
        super().__init__(conv, relu=conv.attr == "relu")  # the geometry, read off the packed layer
        self.tile = tile_for(conv.weight.dtype) if tile is None else tile
        self.points = ops.winograd_points(self.tile)
        u = filter_transform(conv.weight, self.tile)  # (P, C, K)
        if fused is None:  # measured, unless the products were named
            fused = (grouped is None and fusable(conv.in_channels, conv.out_channels, u.dtype, self.tile)
                     and fused_faster(conv.in_channels, conv.out_channels, int(conv.dilation[0]), u.dtype,
                                      self.tile))
        elif fused and grouped is not None:
            raise ValueError("a one-pass layer (fused) has no separate products to choose (grouped)")
        elif fused and not fusable(conv.in_channels, conv.out_channels, u.dtype, self.tile):
            raise ValueError(f"the one-pass bfloat16 layer cannot run {conv} here: "
                             f"{ops.winograd_bf16_status()[1] or 'its shape, dtype or tile'}")
        # The one-pass layer's own pack of U, or None: products and transforms as separate calls.
        self.fused = ops.winograd_bf16_pack(u) if fused else None
        if fused:
            grouped, direct_when_met = False, False
        if grouped is None:
            grouped = grouped_products_faster(conv.in_channels, conv.out_channels, u.dtype, self.tile)
        elif grouped and min(conv.in_channels, conv.out_channels) < GROUPED_MIN_CHANNELS:
            raise ValueError(f"grouped products need {GROUPED_MIN_CHANNELS}+ channels each side: {conv}")
        self.grouped = grouped
        # U as the batched product's operand, or inside the grouped convolution
        self.register_buffer("u", None if self.grouped or fused else u)
        self.products = GroupedProducts(u) if self.grouped else None
        self.dtype_ = u.dtype
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = bias.float().contiguous()  # the output transform adds it in float32
        self.weight = None
        self.dilation_ = int(conv.dilation[0])
        self.workspace = workspace if workspace is not None else Workspace()
        self.tiles_met = CountsMet()
        if direct_when_met is None:
            direct_when_met = (self.tile == 2 and not wide(conv) and direct_faster(
                conv.in_channels, conv.out_channels, self.dilation_, self.dtype_))
        self.direct = conv if direct_when_met else None

    def _run(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        if x.dtype != self.dtype_ or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"WinogradConv2d: expected (N, {self.in_channels}, H, W) {self.dtype_}, "
                             f"got {tuple(x.shape)} {x.dtype}")
        d = self.dilation_
        n, c, h, w = x.shape
        if self.fused is None:  # the one-pass layer has no tile rows to round and no direct choice
            tiles = ops.winograd_tiles(n, h, w, d, pad, self.tile)
            first = self.tiles_met.first_time(tiles)
            if self.direct is not None and not first:
                return self.direct.forward(x) if pad else self.direct.forward_unpadded(x)
        x = x.contiguous(memory_format=torch.channels_last)
        k = self.out_channels
        y = torch.empty((n, k, *ops.winograd_output_size(h, w, d, pad)), dtype=x.dtype,
                        memory_format=torch.channels_last)
        if self.fused is not None:
            return ops.winograd_bf16_conv(x, self.fused, self.bias, self.attr == "relu", d, pad, y)
        rows = new_size_rows(tiles) if first else gemm_rows(tiles)
        grouped = self.grouped and self.products.serves(rows)
        v, m = self.workspace.buffers(rows, c, k, x.dtype, not grouped, self.points)
        ops.winograd_input(x, d, pad, v, not grouped, self.tile)
        if grouped:
            m = self.products(v)
        else:
            torch.bmm(v, self.u if self.u is not None else self.products.batched_operand(), out=m)
        return ops.winograd_output(m, self.bias, self.attr == "relu", (h, w), d, pad, y,
                                   not grouped, self.tile)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.padding[0])

    def forward_unpadded(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, 0)

    def add_relu_(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("WinogradConv2d does not fuse a residual add")

    def extra_repr(self) -> str:
        direct = ", direct when met" if self.direct is not None else ""
        how = ", one pass" if self.fused is not None else ""
        return super().extra_repr() + f", winograd=F({self.tile}x{self.tile},3x3){how}{direct}"


def pays_in_chain(conv: PackedConv2d) -> bool:
    """An eligible layer of a pad-100 net that takes Winograd by default: any in float32 (F(4×4)),
    in bfloat16 (F(2×2)) only one of at least WIDE_CHANNELS (in, out)."""
    return eligible(conv) and (tile_for(conv.weight.dtype) == 4 or wide(conv))


def use_winograd(net: torch.nn.Module, chain: bool = False) -> int:
    """Replace every eligible packed 3×3 convolution of ``net``, grouped ones group by group (of a
    pad-100 net, ``chain``: those that ``pays_in_chain``, always Winograd: a layer's border template
    and its cores must agree within Winograd's rounding) in place, all of them with one workspace;
    how many were."""
    workspace, direct = Workspace(), False if chain else None
    pays = pays_in_chain if chain else eligible
    count = replace_modules(net, pays, lambda conv: WinogradConv2d(conv, workspace, direct_when_met=direct))
    return count + replace_modules(
        net, lambda conv: eligible_grouped(conv, pays),
        lambda conv: GroupedWinogradConv2d(conv, workspace, direct_when_met=direct))


class GroupedWinogradConv2d(PackedConv2d):
    """A grouped 3×3 PackedConv2d (AlexNet's conv4 and conv5: two groups of 192 channels, which
    oneDNN's direct convolution ran at a quarter of the net's time on an AVX2-only CPU) as one
    WinogradConv2d per group over its slice of the channels, their outputs side by side."""

    def __init__(self, conv: PackedConv2d, workspace: "Workspace | None" = None,
                 direct_when_met: "bool | None" = None):
        if not eligible_grouped(conv):
            raise ValueError(f"not a Winograd-eligible grouped 3×3 convolution: {conv}")
        super().__init__(conv, relu=conv.attr == "relu")  # the geometry, read off the packed layer
        workspace = workspace if workspace is not None else Workspace()
        self.parts = torch.nn.ModuleList(
            WinogradConv2d(_group(conv, i), workspace, direct_when_met=direct_when_met)
            for i in range(conv.groups))
        self.weight = self.bias = None

    def _run(self, x: torch.Tensor, padded: bool) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"GroupedWinogradConv2d: expected (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        c = self.in_channels // self.groups
        outs = [part.forward(x[:, i * c:(i + 1) * c]) if padded else
                part.forward_unpadded(x[:, i * c:(i + 1) * c]) for i, part in enumerate(self.parts)]
        return torch.cat(outs, 1).contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, True)

    def forward_unpadded(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, False)

    def add_relu_(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("GroupedWinogradConv2d does not fuse a residual add")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", groups={self.groups}, winograd per group"

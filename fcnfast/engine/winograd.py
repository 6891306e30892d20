"""3×3 convolutions as Winograd F(2×2, 3×3) on the CPU: 2.25× fewer multiply-adds than the direct
convolution, the 16 per-tile-point products one call: a batched matrix product, or for layers of
256 channels and more, on a CPU where it measures faster at load, oneDNN's 1×1 convolution of 16
groups over the tiles (faster on an AVX-512 Zen 4, slower with AMX: benchmarks/RESULTS.md).

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
from .layers import PackedConv2d, replace_modules

# G of F(2×2, 3×3): U = G g Gᵀ (Lavin & Gray).
_G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
                  dtype=torch.float64)
# Narrow layers run faster direct: their GEMMs are too small for the transforms to pay
# (benchmarks/RESULTS.md, issue 15).
MIN_CHANNELS = 128
# The GEMM's rows are the tile count rounded up to this: oneDNN builds a matmul kernel for every new
# shape (milliseconds each), which a folder of photos of many sizes would otherwise pay on every
# image; rounding makes the shapes repeat, at the price of a few rows of zeros.
ROW_STEP = 16
# Layers at least this wide on both sides may take the grouped 1×1 convolution for their products.
GROUPED_MIN_CHANNELS = 256
# The products are timed at load on this many rows, about a 451×300 frame's tiles (which of the two
# wins changes with the row count).
_MEASURED_ROWS = 576


def gemm_rows(tiles: int) -> int:
    """The row count of the tile buffers (and of the GEMM) for ``tiles`` tiles."""
    return -(-tiles // ROW_STEP) * ROW_STEP


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


def filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) → U (16, C, K) in the weight's dtype, tile point 4a + b."""
    u = torch.einsum("ai,kcij,bj->abck", _G, weight.double(), _G)
    return u.reshape(16, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


@functools.lru_cache(maxsize=None)
def grouped_products_faster(c: int, k: int, dtype: torch.dtype) -> bool:
    """Whether this CPU computes a C→K layer's 16 products faster as the grouped 1×1 convolution
    than as the batched matrix product: measured once per process and shape."""
    if min(c, k) < GROUPED_MIN_CHANNELS:
        return False
    rows = _MEASURED_ROWS
    u = torch.full((16, c, k), 0.01, dtype=dtype)
    by_point, out = torch.full((16, rows, c), 0.5, dtype=dtype), torch.empty((16, rows, k), dtype=dtype)
    products, by_tile = GroupedProducts(u), torch.full((rows, 16, c), 0.5, dtype=dtype)
    return calibrate.second_faster(lambda: torch.bmm(by_point, u, out=out), lambda: products(by_tile))


class GroupedProducts:
    """M[t, q] = V[t, q] · U[q] for V (rows, 16, C) as a 1×1 convolution of 16 groups over the rows.

    oneDNN lays the weight out by the row count, and reorders a weight packed for another layout
    on every call, slowly (benchmarks/RESULTS.md), so the weight is packed again whenever the row
    count changes, from a plain copy kept for that."""

    def __init__(self, u: torch.Tensor):
        self.c, self.k = u.shape[1], u.shape[2]
        self.weight = u.permute(0, 2, 1).reshape(16 * self.k, self.c, 1, 1).contiguous()
        self.pack = None  # (rows, packed weight), swapped whole: threads see a consistent pair

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        rows = v.shape[0]
        points = v.view(1, rows, 1, 16 * self.c).permute(0, 3, 1, 2)  # (1, 16C, rows, 1) channels-last
        pack = self.pack
        if pack is None or pack[0] != rows:
            pack = self.pack = (rows, torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, [0, 0], [1, 1], [1, 1], 16, list(points.shape)))
        m = torch.ops.mkldnn._convolution_pointwise(points, pack[1], None, [0, 0], [1, 1], [1, 1],
                                                    16, "none", [], "")
        return m.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).view(rows, 16, self.k)

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

    def buffers(self, rows: int, c: int, k: int, dtype: torch.dtype, by_point: bool = True):
        """(V, M) of ``dtype``, views of this thread's buffers: (16, rows, c) and (16, rows, k)
        when ``by_point`` (a batched GEMM's operands), else V (rows, 16, c) and no M (the grouped
        convolution makes its own). Rows past a call's tiles hold what earlier calls left there
        (zeros at first): they only ever reach rows of M that the output transform does not read."""
        bufs = getattr(self._local, "bufs", None)
        need = (16 * rows * c, 16 * rows * k if by_point else 0)
        have = (0, 0) if bufs is None or bufs[0].dtype != dtype else (bufs[0].numel(), bufs[1].numel())
        if have[0] < need[0] or have[1] < need[1]:
            bufs = tuple(torch.zeros(max(n, h), dtype=dtype) for n, h in zip(need, have))
            self._local.bufs = bufs
        if not by_point:
            return bufs[0][:need[0]].view(rows, 16, c), None
        return bufs[0][:need[0]].view(16, rows, c), bufs[1][:need[1]].view(16, rows, k)

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._local = threading.local()


class WinogradConv2d(PackedConv2d):
    """A PackedConv2d (same geometry, same ReLU fusion) computed as Winograd F(2×2, 3×3), its tile
    buffers from ``workspace`` (shared with the net's other Winograd layers; its own if None), its
    products grouped or batched as ``grouped`` says (None: whichever measures faster here)."""

    def __init__(self, conv: PackedConv2d, workspace: "Workspace | None" = None,
                 grouped: "bool | None" = None):
        if not eligible(conv):
            raise ValueError(f"not a Winograd-eligible 3×3 convolution: {conv}")
        super().__init__(conv, relu=conv.attr == "relu")  # the geometry, read off the packed layer
        u = filter_transform(conv.weight)  # (16, C, K)
        if grouped is None:
            grouped = grouped_products_faster(conv.in_channels, conv.out_channels, u.dtype)
        elif grouped and min(conv.in_channels, conv.out_channels) < GROUPED_MIN_CHANNELS:
            raise ValueError(f"grouped products need {GROUPED_MIN_CHANNELS}+ channels each side: {conv}")
        self.grouped = grouped
        # U as the batched product's operand, or inside the grouped convolution
        self.register_buffer("u", None if self.grouped else u)
        self.products = GroupedProducts(u) if self.grouped else None
        self.dtype_ = u.dtype
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = bias.float().contiguous()  # the output transform adds it in float32
        self.weight = None
        self.dilation_ = int(conv.dilation[0])
        self.workspace = workspace if workspace is not None else Workspace()

    def _run(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        if x.dtype != self.dtype_ or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"WinogradConv2d: expected (N, {self.in_channels}, H, W) {self.dtype_}, "
                             f"got {tuple(x.shape)} {x.dtype}")
        d = self.dilation_
        n, c, h, w = x.shape
        rows = gemm_rows(ops.winograd_tiles(n, h, w, d, pad))
        x = x.contiguous(memory_format=torch.channels_last)
        k = self.out_channels
        v, m = self.workspace.buffers(rows, c, k, x.dtype, by_point=not self.grouped)
        ops.winograd_input(x, d, pad, v, by_point=not self.grouped)
        if self.grouped:
            m = self.products(v)
        else:
            torch.bmm(v, self.u, out=m)
        y = torch.empty((n, k, *ops.winograd_output_size(h, w, d, pad)), dtype=x.dtype,
                        memory_format=torch.channels_last)
        return ops.winograd_output(m, self.bias, self.attr == "relu", (h, w), d, pad, y,
                                   by_point=not self.grouped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.padding[0])

    def forward_unpadded(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, 0)

    def add_relu_(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("WinogradConv2d does not fuse a residual add")

    def extra_repr(self) -> str:
        return super().extra_repr() + ", winograd=F(2x2,3x3)"


def use_winograd(net: torch.nn.Module) -> int:
    """Replace every eligible packed 3×3 convolution of ``net`` in place, all of them with one
    workspace; how many were."""
    workspace = Workspace()
    return replace_modules(net, eligible, lambda conv: WinogradConv2d(conv, workspace))

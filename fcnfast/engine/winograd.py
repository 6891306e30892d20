"""3×3 convolutions as Winograd F(2×2, 3×3) on the CPU: 2.25× fewer multiply-adds than the direct
convolution, the 16 per-tile-point products one batched GEMM (oneDNN's, like every other layer's).

The transforms are native kernels (csrc/cpu/winograd.cpp, csrc/winograd.h); the filter's
U = G g Gᵀ is computed here once per layer, in float64, then rounded to the compute dtype. A
dilated convolution splits into its d×d phases inside the tiling, so ResNet's dilation-2 and -4
layers need no reshuffle. Products are accumulated in float32 by oneDNN and rounded to the
compute dtype once before the output transform: the error stays within the bf16 tolerance of the
engine (tests/test_winograd.py measures it against the float64 convolution).
"""
from __future__ import annotations

import threading

import torch

from .. import ops
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
ROW_STEP = 64


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


class Workspace:
    """The V and M tile buffers of a net's Winograd layers, shared by all of them (they run one
    after another), one pair per thread. Kept between calls and grown to the largest layer seen:
    fresh memory page-faults on every first touch, which a new image size would otherwise pay in
    every layer. Copies and pickles get their own, empty."""

    def __init__(self):
        self._local = threading.local()

    def buffers(self, rows: int, c: int, k: int, dtype: torch.dtype):
        """(V (16, rows, c), M (16, rows, k)) of ``dtype``, views of this thread's buffers. Rows
        past a call's tiles hold what earlier calls left there (zeros at first): they only ever
        reach rows of M that the output transform does not read."""
        bufs = getattr(self._local, "bufs", None)
        need = (16 * rows * c, 16 * rows * k)
        have = (0, 0) if bufs is None or bufs[0].dtype != dtype else (bufs[0].numel(), bufs[1].numel())
        if have[0] < need[0] or have[1] < need[1]:
            bufs = tuple(torch.zeros(max(n, h), dtype=dtype) for n, h in zip(need, have))
            self._local.bufs = bufs
        return bufs[0][:need[0]].view(16, rows, c), bufs[1][:need[1]].view(16, rows, k)

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._local = threading.local()


class WinogradConv2d(PackedConv2d):
    """A PackedConv2d (same geometry, same ReLU fusion) computed as Winograd F(2×2, 3×3), its tile
    buffers from ``workspace`` (shared with the net's other Winograd layers; its own if None)."""

    def __init__(self, conv: PackedConv2d, workspace: "Workspace | None" = None):
        if not eligible(conv):
            raise ValueError(f"not a Winograd-eligible 3×3 convolution: {conv}")
        super().__init__(conv, relu=conv.attr == "relu")  # the geometry, read off the packed layer
        self.register_buffer("u", filter_transform(conv.weight))
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = bias.float().contiguous()  # the output transform adds it in float32
        self.weight = None
        self.dilation_ = int(conv.dilation[0])
        self.workspace = workspace if workspace is not None else Workspace()

    def _run(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        if x.dtype != self.u.dtype or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"WinogradConv2d: expected (N, {self.in_channels}, H, W) {self.u.dtype}, "
                             f"got {tuple(x.shape)} {x.dtype}")
        d = self.dilation_
        n, c, h, w = x.shape
        rows = gemm_rows(ops.winograd_tiles(n, h, w, d, pad))
        x = x.contiguous(memory_format=torch.channels_last)
        k = self.out_channels
        v, m = self.workspace.buffers(rows, c, k, x.dtype)
        ops.winograd_input(x, d, pad, v)
        torch.bmm(v, self.u, out=m)
        y = torch.empty((n, k, *ops.winograd_output_size(h, w, d, pad)), dtype=x.dtype,
                        memory_format=torch.channels_last)
        return ops.winograd_output(m, self.bias, self.attr == "relu", (h, w), d, pad, y)

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

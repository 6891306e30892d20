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


class WinogradConv2d(PackedConv2d):
    """A PackedConv2d (same geometry, same ReLU fusion) computed as Winograd F(2×2, 3×3)."""

    def __init__(self, conv: PackedConv2d):
        if not eligible(conv):
            raise ValueError(f"not a Winograd-eligible 3×3 convolution: {conv}")
        super().__init__(conv, relu=conv.attr == "relu")  # the geometry, read off the packed layer
        self.register_buffer("u", filter_transform(conv.weight))
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = bias.float().contiguous()  # the output transform adds it in float32
        self.weight = None
        self.dilation_ = int(conv.dilation[0])
        self._work = threading.local()  # (shape, V, M) of the last call, per thread

    def _run(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        if x.dtype != self.u.dtype or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"WinogradConv2d: expected (N, {self.in_channels}, H, W) {self.u.dtype}, "
                             f"got {tuple(x.shape)} {x.dtype}")
        d = self.dilation_
        n, c, h, w = x.shape
        tiles = ops.winograd_tiles(n, h, w, d, pad)
        x = x.contiguous(memory_format=torch.channels_last)
        k = self.out_channels
        work = getattr(self._work, "bufs", None)
        if work is None or work[0] != (tiles, x.dtype):
            # Kept between calls: fresh memory of this size page-faults on every first touch.
            work = ((tiles, x.dtype), torch.empty((16, tiles, c), dtype=x.dtype),
                    torch.empty((16, tiles, k), dtype=x.dtype))
            self._work.bufs = work
        _, v, m = work
        ops.winograd_input(x, d, pad, v)
        torch.bmm(v, self.u, out=m)
        y = torch.empty((n, k, *ops.winograd_output_size(h, w, d, pad)), dtype=x.dtype,
                        memory_format=torch.channels_last)
        return ops.winograd_output(m, self.bias, self.attr == "relu", (h, w), d, pad, y)

    def __getstate__(self):  # copies and pickles get their own (empty) workspace
        state = self.__dict__.copy()
        state.pop("_work", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._work = threading.local()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.padding[0])

    def forward_unpadded(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, 0)

    def add_relu_(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("WinogradConv2d does not fuse a residual add")

    def extra_repr(self) -> str:
        return super().extra_repr() + ", winograd=F(2x2,3x3)"


def use_winograd(net: torch.nn.Module) -> int:
    """Replace every eligible packed 3×3 convolution of ``net`` in place; how many were."""
    return replace_modules(net, eligible, WinogradConv2d)

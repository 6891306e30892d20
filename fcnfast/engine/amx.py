"""The CPU engine's bfloat16 1×1 layers on the AMX tile unit (``ops.amx_matmul``,
csrc/cpu/amx_matmul.cpp), where the CPU has one.

A stride-1 1×1 convolution over a channels-last map is a matrix product over its pixels. Called
through torch, oneDNN's convolution costs each call well beyond its kernel (the op, the output's
allocation, the primitive lookup) and makes a new kernel for every new map size
(benchmarks/RESULTS.md); a ResNet frame makes dozens of such calls. ``amx_matmul`` runs
the product with the bias, the ReLU and a residual block's add and ReLU in one native call,
in place for the block's end, and rounds each sum once to bfloat16 as oneDNN does (the labels and
scores agree with the oneDNN path's to bfloat16's rounding: tests/test_amx_matmul.py).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .layers import PackedConv2d, channels_last, replace_modules


def eligible(layer: nn.Module) -> bool:
    """A packed bfloat16 stride-1 1×1 convolution of 32k channels in and out, run as oneDNN's
    convolution (a weight-bound one, fc7, runs as oneDNN's matmul and stays so)."""
    return (type(layer) is PackedConv2d and not layer.product and layer.groups == 1
            and tuple(layer.kernel_size) == (1, 1) and layer.stride == [1, 1] and layer.padding == [0, 0]
            and layer.weight is not None and layer.weight.dtype == torch.bfloat16
            and layer.in_channels % ops.AMX_BLOCK == 0 and layer.out_channels % ops.AMX_BLOCK == 0)


class AmxConv2d(PackedConv2d):
    """A PackedConv2d's 1×1 convolution (same geometry, same ReLU fusion) as ``ops.amx_matmul``:
    the same ``forward``, ``forward_unpadded`` (the border path's) and ``add_relu_``
    (PackedBottleneck's block end)."""

    def __init__(self, conv: PackedConv2d):
        if not eligible(conv):
            raise ValueError(f"not an AMX-eligible 1×1 convolution: {conv}")
        super().__init__(conv, relu=conv.attr == "relu")  # the geometry, read off the packed layer
        self.packed_amx = ops.amx_pack_weight(conv.weight)
        self.weight = None
        if conv.bias is not None:
            self.bias = conv.bias.float().contiguous()  # added to the float32 sums

    def _run(self, x: torch.Tensor, relu: bool, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = channels_last(x)
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        if residual is None:
            out = torch.empty((n, self.out_channels, h, w), dtype=x.dtype, memory_format=torch.channels_last)
        else:
            out = residual  # the block's end: the sum overwrites it
        out_rows = out.permute(0, 2, 3, 1).reshape(n * h * w, self.out_channels)
        ops.amx_matmul(rows, self.packed_amx, self.bias, relu,
                       None if residual is None else out_rows, out_rows)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.attr == "relu")

    forward_unpadded = forward  # no padding

    def add_relu_(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """other ← relu(conv(x) + other), in place (a residual block's end)."""
        other = channels_last(other)
        if other.shape != (x.shape[0], self.out_channels, *x.shape[2:]) or other.dtype != x.dtype:
            raise ValueError(f"AmxConv2d.add_relu_: other is {tuple(other.shape)} {other.dtype}, the "
                             f"convolution gives {(x.shape[0], self.out_channels, *x.shape[2:])} {x.dtype}")
        return self._run(x, True, other)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(1, 1), fused={self.attr}, amx"


def use_amx(net: nn.Module) -> int:
    """Every eligible layer of ``net`` replaced by an AmxConv2d; how many."""
    return replace_modules(net, eligible, AmxConv2d)

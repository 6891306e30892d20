"""Weight initialisation from the paper's surgery: bilinear deconvolutions, zeroed score layers."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def upsample_filt(size: int) -> np.ndarray:
    """The (size, size) bilinear kernel of the official surgery.py."""
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


def bilinear_weight(in_channels: int, out_channels: int, size: int) -> torch.Tensor:
    """Diagonal bilinear ConvTranspose2d weight (C_in, C_out, k, k): class c upsamples to class c."""
    w = np.zeros((in_channels, out_channels, size, size), dtype=np.float64)
    n = min(in_channels, out_channels)
    w[range(n), range(n)] = upsample_filt(size)
    return torch.from_numpy(w).float()


@torch.no_grad()
def bilinear_init_(deconv: nn.ConvTranspose2d) -> nn.ConvTranspose2d:
    k = deconv.kernel_size
    if k[0] != k[1]:
        raise ValueError(f"bilinear init needs a square kernel, got {k}")
    if deconv.groups != 1:
        raise ValueError("bilinear init needs groups=1")
    deconv.weight.copy_(bilinear_weight(deconv.in_channels, deconv.out_channels, k[0]))
    if deconv.bias is not None:
        deconv.bias.zero_()
    return deconv


@torch.no_grad()
def zero_init_(conv: nn.Conv2d) -> nn.Conv2d:
    """Score layers start at zero (the paper: random init gave no gain)."""
    conv.weight.zero_()
    if conv.bias is not None:
        conv.bias.zero_()
    return conv

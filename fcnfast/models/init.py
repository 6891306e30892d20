"""Weight initialisation from the paper's surgery: bilinear deconvolutions, zeroed score layers."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..contract import upsample_filt


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

"""The bilinear upsampling kernel of the paper's surgery.py: one formula for models and ops."""
from __future__ import annotations

import numpy as np


def upsample_filt(size: int) -> np.ndarray:
    """The (size, size) bilinear kernel: f(ky)·f(kx), f(t) = 1 - |t - center| / factor."""
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)

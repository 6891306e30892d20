"""fc6 → fc7 → score_fr in exact row tiles, for frames whose fc activations do not fit.

A convolution's output rows [r0, r1) depend only on input rows [r0·s, (r1−1)·s + k): running it on
that slice (with the halo of k − 1 rows) gives exactly those output rows. fc7 and score_fr are 1×1,
so the whole block tiles by fc6's output rows and only the C-channel scores are kept whole.
"""
from __future__ import annotations

import torch

from .layers import window_geometry


def fc_block_names(trunk_names, start: str = "fc6"):
    """The trunk layers from ``start`` to the end (score_fr), or () when there is no such block."""
    names = list(trunk_names)
    return tuple(names[names.index(start):]) if start in names else ()


def run_tiled(net, names, x: torch.Tensor, tile_rows: int) -> torch.Tensor:
    """Apply ``net``'s layers ``names`` (a conv first, then anything row-local) to ``x``, by tiles of
    ``tile_rows`` output rows of the first conv."""
    if tile_rows < 1:
        raise ValueError(f"tile_rows must be >= 1, got {tile_rows}")
    geometry = window_geometry(getattr(net, names[0]))
    if geometry is None or geometry[2] != 0:  # fc6 is unpadded in every FCN
        raise ValueError(f"{names[0]}: row tiling needs an unpadded square convolution")
    k, s, _, d = geometry
    span = d * (k - 1) + 1
    out_rows = (x.shape[-2] - span) // s + 1
    if out_rows < 1:
        raise ValueError(f"{names[0]}: input of {x.shape[-2]} rows is smaller than its kernel")
    pieces = []
    for r0 in range(0, out_rows, tile_rows):
        r1 = min(out_rows, r0 + tile_rows)
        h = x[:, :, r0 * s:(r1 - 1) * s + span]
        for name in names:
            h = getattr(net, name)(h)
        pieces.append(h)
    return torch.cat(pieces, dim=2).contiguous(memory_format=torch.channels_last)


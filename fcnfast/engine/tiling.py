"""fc6 → fc7 → score_fr in exact row tiles, for frames whose fc activations do not fit.

A convolution's output rows [r0, r1) depend only on input rows [r0·s, (r1−1)·s + k): running it on
that slice (with the halo of k − 1 rows) gives exactly those output rows. fc7 and score_fr are 1×1,
so the whole block tiles by fc6's output rows and only the C-channel scores are kept whole.
"""
from __future__ import annotations

import torch


def fc_block_names(trunk_names, start: str = "fc6"):
    """The trunk layers from ``start`` to the end (score_fr), or () when there is no such block."""
    names = list(trunk_names)
    return tuple(names[names.index(start):]) if start in names else ()


def _first_conv_geometry(layer):
    k = layer.kernel_size
    k = k[0] if isinstance(k, (tuple, list)) else k
    stride = layer.stride[0]
    pad = layer.padding
    pad = (pad[0], pad[1]) if isinstance(pad, (tuple, list)) else (pad, pad)
    dil = layer.dilation[0]
    return int(k), int(stride), pad, int(dil)


def run_tiled(net, names, x: torch.Tensor, tile_rows: int) -> torch.Tensor:
    """Apply ``net``'s layers ``names`` (a conv first, then anything row-local) to ``x``, by tiles of
    ``tile_rows`` output rows of the first conv."""
    if tile_rows < 1:
        raise ValueError(f"tile_rows must be >= 1, got {tile_rows}")
    first = getattr(net, names[0])
    k, s, pad, d = _first_conv_geometry(first)
    if pad != (0, 0):  # fc6 is unpadded in every FCN; a padded first conv would need edge tiles
        raise ValueError(f"{names[0]} is padded {pad}; row tiling needs an unpadded convolution")
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


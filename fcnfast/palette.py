"""PASCAL VOC class names and colour map."""
from __future__ import annotations

import numpy as np

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# Three bits of the label go to one bit of each channel per round, so 8 rounds fill 24 bits:
# that is as far as the map stays one-to-one.
_MAX_COLOURS = 1 << 24


def voc_palette(n: int = 256) -> np.ndarray:
    """The (n, 3) uint8 RGB colour map of the VOC devkit (``labelcolormap.m``).

    Label bits are interleaved into the channels from the most significant bit down: bit 0 of each
    3-bit group goes to red, bit 1 to green, bit 2 to blue. Past 256 labels the same rule carries
    on into the lower channel bits, so colours stay distinct up to 2**24 labels.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"palette size must be a non-negative integer, got {n!r}")
    if n > _MAX_COLOURS:
        raise ValueError(f"palette size {n} exceeds the {_MAX_COLOURS} distinct VOC colours")
    labels = np.arange(n, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for round_ in range(8):
        group = labels >> (3 * round_)
        for channel in range(3):
            rgb[:, channel] |= ((group >> channel) & 1) << (7 - round_)
    return rgb.astype(np.uint8)

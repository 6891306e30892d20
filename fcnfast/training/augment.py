"""Training-time augmentation of (image, labels) pairs: flips, scale jitter, random crops.

Images resize bilinearly, labels with nearest neighbour (a blended label is no class). Crops larger
than the image pad the image with black and the labels with the ignore label, so padding never
counts in the loss.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from PIL import Image


def rescale_pair(image: np.ndarray, labels: np.ndarray, factor: float):
    h, w = labels.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))  # PIL takes (w, h)
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    labels = np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST))
    return image, labels


def random_crop_pair(image: np.ndarray, labels: np.ndarray, size: Tuple[int, int],
                     rng: np.random.Generator, ignore_index: int):
    ch, cw = size
    h, w = labels.shape
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        labels = np.pad(labels, ((0, ph), (0, pw)), constant_values=ignore_index)
        h, w = labels.shape
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    return image[top:top + ch, left:left + cw], labels[top:top + ch, left:left + cw]


def augment_pair(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *,
                 flip: bool = False, scale_jitter: Optional[Tuple[float, float]] = None,
                 crop_size: Optional[Tuple[int, int]] = None, ignore_index: int = 255):
    """One random augmentation of an (H×W×3 uint8, H×W uint8) pair, drawn from ``rng``."""
    if scale_jitter is not None:
        lo, hi = scale_jitter
        factor = float(rng.uniform(lo, hi))
        if factor != 1.0:
            image, labels = rescale_pair(image, labels, factor)
    if flip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if crop_size is not None:
        image, labels = random_crop_pair(image, labels, crop_size, rng, ignore_index)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)

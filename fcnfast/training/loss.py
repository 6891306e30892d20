"""The paper's loss: pixelwise softmax cross-entropy with an ignore label, optional class weights,
summed (the released VOC nets) or averaged over labelled pixels, and loss sampling.

Loss sampling is the paper's equivalent of patchwise training: each pixel's loss is dropped with
probability ``drop`` (its label becomes the ignore label), which thins the spatially correlated
terms of the sum without changing what the net sees.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def drop_losses(labels: torch.Tensor, drop: float, ignore_index: int = 255,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``labels`` with a random ``drop`` fraction of pixels set to ``ignore_index``."""
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    if drop == 0:
        return labels
    dropped = torch.rand(labels.shape, device=labels.device, generator=generator) < drop
    return labels.masked_fill(dropped, ignore_index)


def segmentation_loss(scores: torch.Tensor, labels: torch.Tensor, *, normalize: bool = True,
                      ignore_index: int = 255,
                      class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of (N, C, H, W) ``scores`` against (N, H, W) ``labels``.

    ``normalize``: divided by the number of labelled pixels (weighted: by their summed weight);
    otherwise the plain sum. A batch with no labelled pixel gives a zero that still backpropagates.
    """
    if scores.dim() != 4 or labels.shape != (scores.shape[0], *scores.shape[2:]):
        raise ValueError(f"scores must be (N, C, H, W) and labels (N, H, W); got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    labels = labels.long()
    # A label outside [0, C) would fail deep inside cross_entropy (or on GPU, assert): say which.
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= scores.shape[1]))
    if bool(bad.any()):
        found = labels[bad].unique()[:8].tolist()
        raise ValueError(f"labels {found} are outside the model's {scores.shape[1]} classes (and not "
                         f"the ignore label {ignore_index}): does the dataset match num_classes?")
    total = F.cross_entropy(scores.float(), labels, weight=class_weights,
                            ignore_index=ignore_index, reduction="sum")
    if not normalize:
        return total
    valid = labels != ignore_index
    if class_weights is not None:
        denom = class_weights[labels.clamp(0, len(class_weights) - 1)][valid].sum()
    else:
        denom = valid.sum()
    return total / denom.clamp(min=1).to(total.dtype)

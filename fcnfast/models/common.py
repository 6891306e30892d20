"""Pieces shared by the reference FCN models."""
from __future__ import annotations

import torch
from torch import nn

from ..convention import InputConvention


def crop(t: torch.Tensor, offset: int, size) -> torch.Tensor:
    """Caffe's Crop layer: the (H, W) window of ``t`` starting at (offset, offset)."""
    h, w = size
    if offset + h > t.shape[-2] or offset + w > t.shape[-1]:
        raise RuntimeError(
            f"crop window {offset}+{(h, w)} exceeds the map {tuple(t.shape[-2:])}: "
            "the net's padding does not cover this input size")
    return t[..., offset:offset + h, offset:offset + w]


class FCNBase(nn.Module):
    """Common interface of every reference model.

    ``forward(x)`` takes a preprocessed (N, 3, H, W) batch in the net's input convention and returns
    (N, C, H, W) class scores aligned with the input.
    """

    arch: str = ""
    input_convention: InputConvention

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}"

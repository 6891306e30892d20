"""How a reference model describes its head to the engine: a list of head-op steps, as data.

Every FCN ends with class scores at a coarse stride, upsampled by transposed convolutions with
cropped, scored skip layers added (``upsample_crop_add``, its 1×1 scoring fused), and finally
upsampled to the image and reduced to labels (``upsample_crop_argmax``; torchvision's FCN-ResNet:
``interp_argmax``). Each model's ``head_plan()`` returns its steps with its own (float32) weights;
the engine runs them without knowing the model's class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn


@dataclass(frozen=True)
class SkipStep:
    """h ← crop(convT(h, weight, stride)) + crop(score(scale · features[skip]), skip_offset)."""
    weight: torch.Tensor
    stride: int
    skip: str  # trunk layer whose output is the skip features
    skip_weight: torch.Tensor  # (C, F) of the 1×1 scoring conv
    skip_bias: Optional[torch.Tensor]
    skip_offset: int
    skip_scale: float

    @property
    def geometry(self) -> Dict[str, int]:
        return dict(kernel_size=int(self.weight.shape[-1]), stride=self.stride)


@dataclass(frozen=True)
class FinalStep:
    """labels ← argmax crop(convT(h, weight, stride), offset, image size); bilinear interpolation
    (``interp_argmax``) when weight is None."""
    weight: Optional[torch.Tensor]
    stride: int
    offset: int

    @property
    def op(self) -> str:
        return "interp_argmax" if self.weight is None else "upsample_crop_argmax"

    @property
    def geometry(self) -> Dict[str, int]:
        if self.weight is None:
            return {}
        return dict(kernel_size=int(self.weight.shape[-1]), stride=self.stride)


INTERPOLATE = FinalStep(None, 0, 0)


@dataclass(frozen=True)
class HeadPlan:
    skips: Tuple[SkipStep, ...]
    final: FinalStep

    @property
    def skip_layers(self) -> Tuple[str, ...]:
        return tuple(s.skip for s in self.skips)

    @property
    def ops(self) -> Tuple[str, ...]:
        return (("upsample_crop_add",) if self.skips else ()) + (self.final.op,)


def deconvolution(m: nn.ConvTranspose2d) -> Tuple[torch.Tensor, int]:
    """(weight, stride) of an FCN deconvolution; ValueError for any other transposed conv."""
    if m.bias is not None or m.padding != (0, 0) or m.stride[0] != m.stride[1] \
            or m.output_padding != (0, 0) or m.groups != 1 or m.dilation != (1, 1):
        raise ValueError(f"{m} is not an FCN deconvolution (square stride, no bias/padding)")
    return m.weight.detach(), int(m.stride[0])


def skip_step(deconv: nn.ConvTranspose2d, skip: str, score: nn.Conv2d, offset: int,
              scale: float = 1.0) -> SkipStep:
    """The step ``deconv`` then + crop(``score``(scale · features of ``skip``), ``offset``)."""
    weight, stride = deconvolution(deconv)
    bias = None if score.bias is None else score.bias.detach()
    return SkipStep(weight, stride, skip, score.weight.detach()[:, :, 0, 0], bias, offset,
                    float(scale))


def final_step(deconv: nn.ConvTranspose2d, offset: int) -> FinalStep:
    weight, stride = deconvolution(deconv)
    return FinalStep(weight, stride, offset)

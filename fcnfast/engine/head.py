"""The head of each FCN as a list of head-op steps, resolved once at load time.

Every FCN ends with class scores at a coarse stride, upsampled by transposed convolutions with
cropped, scored skip layers added (``upsample_crop_add``, its 1×1 scoring fused), and finally
upsampled to the image and reduced to labels (``upsample_crop_argmax``; torchvision's FCN-ResNet:
``interp_argmax``). The full-resolution logits are never materialised.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from ..models import FCN8s, FCN16s, FCNBase
from ..models.common import ChainFCN
from ..models.resnet import _FCNResNet


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


@dataclass(frozen=True)
class FinalStep:
    """labels ← argmax crop(convT(h, weight, stride), offset, image size); interp when weight is None."""
    weight: Optional[torch.Tensor]
    stride: int
    offset: int


@dataclass(frozen=True)
class HeadPlan:
    skips: Tuple[SkipStep, ...]
    final: FinalStep

    @property
    def skip_layers(self) -> Tuple[str, ...]:
        return tuple(s.skip for s in self.skips)

    @property
    def ops(self) -> Tuple[str, ...]:
        last = "interp_argmax" if self.final.weight is None else "upsample_crop_argmax"
        return (("upsample_crop_add",) if self.skips else ()) + (last,)


def _deconv(m: nn.ConvTranspose2d):
    if m.bias is not None or m.padding != (0, 0) or m.stride[0] != m.stride[1] \
            or m.output_padding != (0, 0) or m.groups != 1 or m.dilation != (1, 1):
        raise ValueError(f"{m} is not an FCN deconvolution (square stride, no bias/padding)")
    return m.weight.detach(), int(m.stride[0])


def _skip(model, deconv: str, skip: str, score: str, scale: float) -> SkipStep:
    weight, stride = _deconv(getattr(model, deconv))
    conv = getattr(model, score)
    bias = None if conv.bias is None else conv.bias.detach()
    return SkipStep(weight, stride, skip, conv.weight.detach()[:, :, 0, 0], bias,
                    model.crop_offsets[score], float(scale))


def head_plan(model: FCNBase) -> HeadPlan:
    """The head steps of a reference model; the weights are the model's own (float32) tensors."""
    if isinstance(model, _FCNResNet):
        return HeadPlan((), FinalStep(None, 0, 0))
    if isinstance(model, FCN8s):  # also at-once: its pool scales are the class attributes
        skips = (_skip(model, "upscore2", "pool4", "score_pool4", model.pool4_scale),
                 _skip(model, "upscore_pool4", "pool3", "score_pool3", model.pool3_scale))
        weight, stride = _deconv(model.upscore8)
        return HeadPlan(skips, FinalStep(weight, stride, model.crop_offsets["upscore8"]))
    if isinstance(model, FCN16s):
        skips = (_skip(model, "upscore2", "pool4", "score_pool4", 1.0),)
        weight, stride = _deconv(model.upscore16)
        return HeadPlan(skips, FinalStep(weight, stride, model.crop_offsets["upscore16"]))
    if isinstance(model, ChainFCN) and hasattr(model, "upscore"):
        weight, stride = _deconv(model.upscore)
        return HeadPlan((), FinalStep(weight, stride, model.crop_offsets["upscore"]))
    raise TypeError(f"the engine has no head plan for {type(model).__name__}")

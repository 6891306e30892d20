"""Reference FCN models: plain PyTorch modules, the ground truth and the training model."""
from __future__ import annotations

from .alexnet import FCNAlexNet
from .common import FCNBase, crop
from .geometry import CoordMap, GeometryError, chain_map, crop_offset, layer_map
from .googlenet import FCNGoogLeNet
from .resnet import FCNResNet50, FCNResNet101
from .vgg import (FCN8s, FCN8sAtOnce, FCN16s, FCN32s, NYUDFCN32sColorHHA, SIFTFlowFCN8s,
                  SIFTFlowFCN16s, SIFTFlowFCN32s)

ARCHS = {
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "fcn8s_atonce": FCN8sAtOnce,
    "fcn_alexnet": FCNAlexNet,
    "fcn_googlenet": FCNGoogLeNet,
    "fcn_resnet50": FCNResNet50,
    "fcn_resnet101": FCNResNet101,
    "siftflow_fcn32s": SIFTFlowFCN32s,
    "siftflow_fcn16s": SIFTFlowFCN16s,
    "siftflow_fcn8s": SIFTFlowFCN8s,
    "nyud_fcn32s_color_hha": NYUDFCN32sColorHHA,
}


def build_model(arch: str, num_classes: int = 21, **kwargs) -> FCNBase:
    """A fresh reference model of architecture ``arch`` (one of ``ARCHS``)."""
    try:
        cls = ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}") from None
    return cls(num_classes=num_classes, **kwargs)


__all__ = ["ARCHS", "build_model", "FCNBase", "crop", "CoordMap", "GeometryError", "chain_map",
           "crop_offset", "layer_map", "FCN32s", "FCN16s", "FCN8s", "FCN8sAtOnce", "FCNAlexNet",
           "FCNGoogLeNet",
           "FCNResNet50", "FCNResNet101", "SIFTFlowFCN32s", "SIFTFlowFCN16s", "SIFTFlowFCN8s",
           "NYUDFCN32sColorHHA"]

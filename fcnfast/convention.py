"""How a network wants its input: channel order, value scale, mean and std.

A pixel with intensity v in [0, 1] becomes ``(v * scale - mean[c]) / std[c]`` in the network's
channel order. Caffe-derived nets take BGR on a 0-255 scale minus the ImageNet BGR mean; torchvision
nets take RGB on a 0-1 scale with ImageNet mean and std.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Tuple


@dataclass(frozen=True)
class InputConvention:
    channel_order: str  # "RGB" or "BGR"
    scale: float  # network value of a full-intensity pixel
    mean: Tuple[float, float, float]  # in the network's channel order
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std must have 3 values each")
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must not contain 0, got {self.std}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def bgr(self) -> bool:
        return self.channel_order == "BGR"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputConvention":
        try:
            return cls(d["channel_order"], d["scale"], tuple(d["mean"]), tuple(d.get("std", (1, 1, 1))))
        except (KeyError, TypeError) as e:
            raise ValueError(f"invalid input convention {d!r}: {e}") from None


# The official Caffe FCN releases (VGG16, AlexNet, GoogLeNet trunks) and pytorch-fcn.
CAFFE_BGR = InputConvention("BGR", 255.0, (104.00698793, 116.66876762, 122.67891434))
# torchvision's ImageNet models (FCN-ResNet50/101).
TORCHVISION_RGB = InputConvention("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# SIFT Flow's releases (siftflow_layers.py): BGR minus SIFT Flow's own mean.
SIFTFLOW_BGR = InputConvention("BGR", 255.0, (114.578, 115.294, 108.353))
# NYUDv2's releases (nyud_layers.py): colour as BGR minus NYUD's own mean; HHA (Gupta et al.'s
# horizontal disparity, height, angle, stored as an RGB PNG) minus its mean, channels unflipped.
NYUD_COLOR_BGR = InputConvention("BGR", 255.0, (116.190, 97.203, 92.318))
NYUD_HHA = InputConvention("RGB", 255.0, (132.431, 94.076, 118.477))


def streams(convention) -> Tuple[InputConvention, ...]:
    """The per-stream conventions of a model's input: one, or a tuple of them for a model that
    takes several images (NYUDv2's colour + HHA), each 3 channels of the input in turn."""
    return convention if isinstance(convention, tuple) else (convention,)


def convention_to_json(convention):
    """A convention (or a tuple of them) as JSON data: a dict, or a list of dicts."""
    if isinstance(convention, tuple):
        return [c.to_dict() for c in convention]
    return convention.to_dict()


def convention_from_json(data):
    """The inverse of ``convention_to_json``."""
    if isinstance(data, list):
        return tuple(InputConvention.from_dict(d) for d in data)
    return InputConvention.from_dict(data)

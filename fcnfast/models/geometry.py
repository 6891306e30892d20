"""Caffe's coord_map algebra: where each feature map sits relative to the input image.

Every layer maps input coordinates to output coordinates affinely, ``out = a * in + b``; a chain of
layers composes these maps. Two maps with the same scale ``a`` differ by an offset ``b``, and that
offset is the crop that aligns them (FCN's Crop layer). Offsets are computed here from the layers
themselves, never written by hand, so they stay right for any trunk (VGG's 19, 5/27, 5/9/31 come out
of it). Exact rational arithmetic: a non-integer offset means the geometry cannot be cropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

from torch import nn


class GeometryError(ValueError):
    """The layers do not line up (scale mismatch, negative or fractional crop)."""


@dataclass(frozen=True)
class CoordMap:
    a: Fraction = Fraction(1)
    b: Fraction = Fraction(0)

    def then(self, nxt: "CoordMap") -> "CoordMap":
        """This map followed by ``nxt``."""
        return CoordMap(nxt.a * self.a, nxt.a * self.b + nxt.b)


IDENTITY = CoordMap()

# Layers that keep every coordinate in place.
_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Dropout2d, nn.LocalResponseNorm, nn.BatchNorm2d,
                 nn.Identity)


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _square(module, name):
    vals = {k: _pair(getattr(module, k)) for k in ("kernel_size", "stride", "padding")}
    if hasattr(module, "dilation"):
        vals["dilation"] = _pair(module.dilation)
    for k, (h, w) in vals.items():
        if h != w:
            raise GeometryError(f"{name}: coord_map needs equal {k} on both axes, got {(h, w)}")
    return {k: Fraction(v[0]) for k, v in vals.items()}


def layer_map(module: nn.Module, name: str = "layer") -> CoordMap:
    """The coordinate map of one layer (Caffe's coord_map.coord_map)."""
    if hasattr(module, "coord_map"):
        return module.coord_map()
    if isinstance(module, _PASS_THROUGH):
        return IDENTITY
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        g = _square(module, name)
        ks = (g["kernel_size"] - 1) * g.get("dilation", 1) + 1
        return CoordMap(1 / g["stride"], (g["padding"] - (ks - 1) / 2) / g["stride"])
    if isinstance(module, nn.ConvTranspose2d):
        g = _square(module, name)
        ks = (g["kernel_size"] - 1) * g["dilation"] + 1
        return CoordMap(g["stride"], (ks - 1) / 2 - g["padding"])
    if isinstance(module, nn.Sequential):
        return chain_map(module, name)
    raise GeometryError(f"{name}: no coordinate map for {type(module).__name__}")


def chain_map(layers: Iterable[nn.Module], name: str = "chain", start: CoordMap = IDENTITY) -> CoordMap:
    m = start
    for i, layer in enumerate(layers):
        m = m.then(layer_map(layer, f"{name}[{i}]"))
    return m


def crop_offset(cropped: CoordMap, reference: CoordMap, what: str = "crop") -> int:
    """Offset at which to crop the map ``cropped`` so it lines up with ``reference``."""
    if cropped.a != reference.a:
        raise GeometryError(f"{what}: scale mismatch ({cropped.a} vs {reference.a})")
    off = cropped.b - reference.b
    if off.denominator != 1:
        raise GeometryError(f"{what}: non-integer crop offset {float(off)}")
    if off < 0:
        raise GeometryError(f"{what}: negative crop offset {int(off)}")
    return int(off)

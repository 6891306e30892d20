"""Compute only what the image changes: FCN's pad-100 border is the same for every frame.

The Caffe FCNs pad their first convolution by 100 pixels so any input size survives to fc6. In
each early feature map only a *core* rectangle depends on the image (the outputs whose receptive
field reaches it); everything around it — the padding seen through the layers — is the same for
every frame of that size. So a frame of a size seen before runs whole and its maps are kept as
per-layer buffers; later frames recompute just each layer's core (an input slice with its halo)
into those buffers. On VGG16 at 451×300 the core is ~45% of conv1 and ~60% of conv3: about a
fifth of the trunk's work is skipped, without approximation: the border values are computed once
by the very same layers, and a convolution of a slice is the slice of the convolution (up to the
accumulation order oneDNN picks for the slice: one ulp in bf16 at most, as measured).

Layers run this way: convolutions, max pools, and per-pixel layers (ReLU, LRN, dropout); the first
other layer (an Inception block) ends the tracking and the rest of the trunk runs whole.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import PackedConv2d, window_geometry

Span = Tuple[int, int]  # [lo, hi) along one axis
Rect = Tuple[Span, Span]

# A layer computes its core alone only when the core is at most this fraction of its output; past
# it the slice copies cost what they save (figures: benchmarks/RESULTS.md, "Figures moved out of
# code comments").
MAX_CORE_FRACTION = 0.85
# Buffers kept per input shape; layers past this budget run whole (the early, largest maps give
# most of the gain). Two shapes are kept, so at most twice this is held.
MAX_BUFFER_BYTES = 768 << 20

# Caffe's LRN in the models is a LocalResponseNorm.
_POINTWISE = (nn.ReLU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.LocalResponseNorm)


def _touching(core: Span, k: int, s: int, p: int, d: int, n_out: int) -> Span:
    """Outputs whose window (input rows q·s − p … q·s − p + d(k−1)) meets ``core``."""
    reach = d * (k - 1)
    lo = -((-(core[0] + p - reach)) // s)  # ceil
    hi = (core[1] - 1 + p) // s + 1
    return max(0, lo), min(n_out, hi)


def _window(span: Span, k: int, s: int, p: int, d: int) -> Span:
    """Input rows (unpadded; may reach outside the map) under outputs ``span``."""
    return span[0] * s - p, (span[1] - 1) * s - p + d * (k - 1) + 1


def _run_on(layer, x: torch.Tensor, rect: Rect, geometry) -> Optional[torch.Tensor]:
    """``layer``'s outputs ``rect`` from the slice of ``x`` under them; None when that needs the
    map's edge (zero padding for a conv is added; a pool's edge windows are left to a whole run)."""
    k, s, p, d = geometry
    (y0, y1), (x0, x1) = (_window(r, k, s, p, d) for r in rect)
    h, w = x.shape[2], x.shape[3]
    pads = (max(0, -x0), max(0, x1 - w), max(0, -y0), max(0, y1 - h))
    part = x[:, :, max(0, y0):min(y1, h), max(0, x0):min(x1, w)]
    if isinstance(layer, nn.MaxPool2d):
        if any(pads):
            return None
        return F.max_pool2d(part, k, s, 0, d, ceil_mode=False)
    if any(pads):
        part = F.pad(part, pads)
    part = part.contiguous(memory_format=torch.channels_last)
    if isinstance(layer, PackedConv2d):
        return layer.forward_unpadded(part)
    return F.conv2d(part, layer.weight, layer.bias, layer.stride, 0, layer.dilation, layer.groups)


def _leaves(net, names):
    """(top-level name, qualified name, layer) of the chain ``names``, Sequentials flattened."""
    def walk(prefix, module):
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                yield from walk(f"{prefix}.{child_name}", child)
        else:
            yield prefix, module

    for top in names:
        for name, layer in walk(top, getattr(net, top)):
            yield top, name, layer


class BorderCache:
    """Per-layer output buffers of the frames of one input shape (the last few shapes kept).

    A shape's first frame runs whole and keeps nothing: a folder of photos of many sizes never
    pays for buffers it will not reuse. Its second frame runs whole and keeps its maps; from the
    third on only the cores are computed. ``seen`` remembers the shapes run once.
    """

    def __init__(self, capacity: int = 2, seen: int = 64):
        self.capacity = capacity
        self._shapes: "OrderedDict[tuple, dict]" = OrderedDict()
        self._seen: "OrderedDict[tuple, None]" = OrderedDict()
        self._seen_capacity = seen

    def run(self, net, names, x: torch.Tensor, keep=()):
        """Apply ``net``'s layers ``names`` to ``x`` (see module doc): (output, {kept name: map}).

        The kept maps may be this cache's buffers: use them before the next call (the engine
        holds a lock over a whole batch)."""
        key = (tuple(x.shape), x.dtype, x.device)
        buffers = self._shapes.get(key)
        plain = buffers is None and key not in self._seen  # a shape's first frame: keep nothing
        first = buffers is None and not plain
        if plain:
            self._seen[key] = None
            while len(self._seen) > self._seen_capacity:
                self._seen.popitem(last=False)
        elif first:
            self._seen.pop(key)
            buffers = {}
            self._shapes[key] = buffers
            while len(self._shapes) > self.capacity:
                self._shapes.popitem(last=False)
        else:
            self._shapes.move_to_end(key)
        # the image is all core; with no core tracked every layer runs whole
        core: Optional[Rect] = None if plain else ((0, x.shape[2]), (0, x.shape[3]))
        kept = {}
        h = x
        for top, name, layer in _leaves(net, names):
            geometry = window_geometry(layer)
            if core is not None and geometry is None and not isinstance(layer, _POINTWISE):
                core = None  # an unknown layer: no tracking from here on
            if core is None:
                h = layer(h)
            elif geometry is None:  # per pixel: the core stays where it is
                h = BorderCache._pointwise(name, layer, h, core, buffers, first)
            else:
                h, core = BorderCache._windowed(name, layer, h, core, geometry, buffers, first)
            if top in keep:
                kept[top] = h  # a kept layer's last leaf comes last
        return h, kept

    @staticmethod
    def _pointwise(name, layer, h, core, buffers, first):
        if isinstance(layer, (nn.Identity, nn.Dropout, nn.Dropout2d)):
            return h
        if first or buffers.get(name) is None:
            out = layer(h)
            held = sum(b.numel() * b.element_size() for b in buffers.values() if b is not None)
            fits = held + out.numel() * out.element_size() <= MAX_BUFFER_BYTES
            if first and fits and out.data_ptr() != h.data_ptr():  # in-place: no buffer
                buffers[name] = out
            return out
        out = buffers[name]
        (y0, y1), (x0, x1) = core
        out[:, :, y0:y1, x0:x1] = layer(h[:, :, y0:y1, x0:x1])
        return out

    @staticmethod
    def _windowed(name, layer, h, core, geometry, buffers, first):
        k, s, p, d = geometry
        out = buffers.get(name)
        if first or out is None:  # None: this layer runs whole at this size
            out = layer(h)
            size = out.shape[2:]
            new_core = tuple(_touching(core[a], k, s, p, d, size[a]) for a in range(2))
            area = (new_core[0][1] - new_core[0][0]) * (new_core[1][1] - new_core[1][0])
            if first:  # keep its border, unless the core is most of it or memory is spent
                held = sum(b.numel() * b.element_size() for b in buffers.values() if b is not None)
                worth = area <= MAX_CORE_FRACTION * size[0] * size[1]
                fits = held + out.numel() * out.element_size() <= MAX_BUFFER_BYTES
                buffers[name] = out if worth and fits else None
            return out, new_core
        size = out.shape[2:]
        new_core = tuple(_touching(core[a], k, s, p, d, size[a]) for a in range(2))
        part = _run_on(layer, h, new_core, geometry)
        if part is None:  # a pool whose core reaches the map's edge: run it whole from now on
            buffers[name] = None
            return layer(h), new_core
        (y0, y1), (x0, x1) = new_core
        out[:, :, y0:y1, x0:x1] = part
        return out, new_core

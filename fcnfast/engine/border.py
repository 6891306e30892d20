"""Compute only what the image changes: FCN's pad-100 border is the same for every frame.

The Caffe FCNs pad their first convolution by 100 pixels so any input size survives to fc6. In
each early feature map only a *core* rectangle depends on the image (the outputs whose receptive
field reaches it); everything around it — the padding seen through the layers — is what an
all-zero input (zero after preprocessing) gives. So the engine keeps per-layer buffers of a shape
holding that border, and every frame recomputes just each layer's core (an input slice with its
halo) into them. On VGG16 at 451×300 the core is ~45% of conv1 and ~60% of conv3.

The border of a new shape needs no whole run. An all-zero input's first convolution is its bias
everywhere; each later map of it is constant except in bands along its edges (the zero padding of
later layers, seen through the layers), and the bands' widths do not depend on the map's size. A
small *template* — the zero input's maps at a size congruent to the shape's modulo the trunk's
strides, just big enough to have one row and one column outside every band — holds every distinct
value: a shape's border is assembled from the template's bands and its constant middle row and
column. A folder of photos of many sizes pays the template (a few percent of a whole run) per
size instead of a whole run. Exact: the border values are the same layers' outputs on the same
zeros, and a convolution of a slice is the slice of the convolution (up to the accumulation order
oneDNN picks for a shape: one ulp in bf16 at most, as measured; a Winograd layer's tiles start at
the slice's corner instead of the map's, so its outputs differ within its own rounding error).

Layers run this way: convolutions, max pools, and per-pixel layers (ReLU, LRN, dropout); the first
other layer (an Inception block) ends the tracking and the rest of the trunk runs whole.

The layers up to the first pool (the full-resolution ones, whose maps are the largest) keep no
buffers: each computes its core widened by what the next one reads, straight from the previous
one's output, so only the pool's core is pasted into a buffer. A buffered layer instead costs
two copies of its core (its input slice made dense, its output pasted), which at full
resolution cost more than the ring of extra outputs.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

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

# Templates kept, condensed to their edge bands (a few hundred kB each for VGG16 in bfloat16): a
# new size whose residues modulo the strides were met before (one photo in three of a folder of
# random sizes, more in a real one) skips its template and its kernels' creation.
TEMPLATE_BYTES = 64 << 20

# The frames a shape seen twice is expected to run: its buffers are chosen for that many.
REPEATED_FRAMES = 16
# What one output value of a pool or an LRN costs, in a convolution's multiply-adds: memory-bound
# work against AMX/AVX-512 arithmetic. Without it a template never reached past conv2 of
# GoogLeNet, leaving its LRN and pool to run whole (benchmarks/RESULTS.md, issue 15).
_ELEMENT_COST = 32

# Caffe's LRN in the models is a LocalResponseNorm.
_POINTWISE = (nn.ReLU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.LocalResponseNorm)
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d)


def _touching(core: Span, k: int, s: int, p: int, d: int, n_out: int) -> Span:
    """Outputs whose window (input rows q·s − p … q·s − p + d(k−1)) meets ``core``."""
    reach = d * (k - 1)
    lo = -((-(core[0] + p - reach)) // s)  # ceil
    hi = (core[1] - 1 + p) // s + 1
    return max(0, lo), min(n_out, hi)


def _window(span: Span, k: int, s: int, p: int, d: int) -> Span:
    """Input rows (unpadded; may reach outside the map) under outputs ``span``."""
    return span[0] * s - p, (span[1] - 1) * s - p + d * (k - 1) + 1


def _out_size(n: int, layer, k: int, s: int, p: int, d: int) -> int:
    """The output length of a conv or max pool (PyTorch's rule, ceil mode included)."""
    span = n + 2 * p - d * (k - 1) - 1
    if not getattr(layer, "ceil_mode", False):
        return span // s + 1
    out = -(-span // s) + 1
    return out - 1 if (out - 1) * s >= n + p else out


def _bands(top: int, bottom: int, n: int, n_out: int, k: int, s: int, p: int, d: int) -> Span:
    """Edge bands of a layer's output over a map whose first ``top`` and last ``bottom`` rows
    feel its edges: outputs whose window reaches those rows or past the map."""
    top_out = -(-(top + p) // s) if top + p > 0 else 0
    clean_end = n - bottom + p - d * (k - 1)  # window ends before the bottom band iff q·s < this
    return min(n_out, top_out), n_out - min(n_out, max(0, -(-clean_end // s)))


def _advance(n: int, bands: Span, layer, geometry) -> Tuple[int, Span]:
    """(output length, output edge bands) of a windowed layer along one axis."""
    k, s, p, d = geometry
    out = _out_size(n, layer, k, s, p, d)
    return out, _bands(*bands, n, out, k, s, p, d)


def _slice(x: torch.Tensor, rect: Rect):
    """(``x[..., rect]`` clipped to the map, the (left, right, top, bottom) zeros it lacks)."""
    (y0, y1), (x0, x1) = rect
    h, w = x.shape[2], x.shape[3]
    pads = (max(0, -x0), max(0, x1 - w), max(0, -y0), max(0, y1 - h))
    return x[:, :, max(0, y0):min(y1, h), max(0, x0):min(x1, w)], pads


def _apply_unpadded(layer, part: torch.Tensor, geometry) -> torch.Tensor:
    """A conv or max pool over ``part`` taken as already padded (the slice under its outputs)."""
    k, s, p, d = geometry
    if isinstance(layer, nn.MaxPool2d):
        return F.max_pool2d(part, k, s, 0, d, ceil_mode=False)
    part = part.contiguous(memory_format=torch.channels_last)
    if isinstance(layer, PackedConv2d):
        return layer.forward_unpadded(part)
    return F.conv2d(part, layer.weight, layer.bias, layer.stride, 0, layer.dilation, layer.groups)


def _run_on(layer, x: torch.Tensor, rect: Rect, geometry) -> Optional[torch.Tensor]:
    """``layer``'s outputs ``rect`` from the slice of ``x`` under them; None when that needs the
    map's edge (zero padding for a conv is added; a pool's edge windows are left to a whole run)."""
    part, pads = _slice(x, tuple(_window(r, *geometry) for r in rect))
    if any(pads):
        if isinstance(layer, nn.MaxPool2d):
            return None
        part = F.pad(part, pads)
    return _apply_unpadded(layer, part, geometry)


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


@dataclass
class _Step:
    """One layer of the tracked chain at one input shape."""
    top: str  # the net's child it belongs to (the unit ``keep`` names)
    name: str
    layer: nn.Module
    geometry: Optional[tuple]  # None: per pixel
    size: Tuple[int, int]  # output (H, W)
    core: Rect  # the outputs the image reaches
    bands: Tuple[Span, Span]  # (top, bottom) edge bands of the zero input's map, per axis
    buffered: bool = False
    macs: int = 0  # multiply-adds per output pixel
    nbytes: int = 0  # of its output


def _chain_plan(leaves, shape, element_size: int) -> List[_Step]:
    """The tracked layers' sizes, cores and edge bands at input ``shape`` (no computation), and
    which of them keep a border buffer. Empty when the chain does not start with a convolution
    (its template needs the zero input's first map to be its bias)."""
    steps: List[_Step] = []
    n, c, size = shape[0], shape[1], tuple(shape[2:])
    core: Rect = ((0, size[0]), (0, size[1]))
    bands = ((0, 0), (0, 0))
    held = 0
    for top, name, layer in leaves:
        geometry = window_geometry(layer)
        if geometry is None and not isinstance(layer, _POINTWISE):
            break  # an unknown layer: no tracking from here on
        if not steps and not (geometry and isinstance(layer, (PackedConv2d, nn.Conv2d))):
            return []
        if geometry is None:
            keeps = not isinstance(layer, _PASS_THROUGH) and not getattr(layer, "inplace", False)
            step = _Step(top, name, layer, None, size, core, bands, keeps)
            step.macs = _ELEMENT_COST * c if keeps else 0
        else:
            k, s, p, d = geometry
            size_in = size
            size, bands = zip(*(_advance(size[a], bands[a], layer, geometry) for a in range(2)))
            if not steps:  # the zero input's first map is its bias everywhere
                bands = ((0, 0), (0, 0))
            core = tuple(_touching(core[a], k, s, p, d, size[a]) for a in range(2))
            c = getattr(layer, "out_channels", c)
            area = (core[0][1] - core[0][0]) * (core[1][1] - core[1][0])
            worth = area <= MAX_CORE_FRACTION * size[0] * size[1]
            if isinstance(layer, nn.MaxPool2d):  # a pool's edge windows are left to a whole run
                under = [_window(core[a], k, s, p, d) for a in range(2)]
                worth = worth and all(lo >= 0 and hi <= n_in for (lo, hi), n_in in zip(under, size_in))
            step = _Step(top, name, layer, geometry, size, core, bands, worth)
            if isinstance(layer, nn.MaxPool2d):
                step.macs = _ELEMENT_COST * c
            else:
                step.macs = k * k * (layer.in_channels // layer.groups) * c
        step.nbytes = n * c * size[0] * size[1] * element_size
        if step.buffered:
            step.buffered = held + step.nbytes <= MAX_BUFFER_BYTES
            held += step.nbytes if step.buffered else 0
        steps.append(step)
    return steps


@dataclass
class _Prefix:
    """The unbuffered leading layers (see module doc): steps 0..``last`` compute ``rects`` (their
    outputs' rows and columns), from the input's ``window`` (which may reach into the padding)."""
    last: int
    rects: List[Rect]
    window: Rect


def _prefix(steps: List[_Step], last_buffered: int) -> Optional[_Prefix]:
    """The prefix through the first pool (or the last buffered step, if earlier); None where it
    would be one layer (nothing to save) or needs a map's edge."""
    pools = [i for i, st in enumerate(steps) if isinstance(st.layer, nn.MaxPool2d)]
    last = min(pools[0] if pools else len(steps) - 1, last_buffered)
    if last < 1 or any(st.geometry is not None and not st.buffered for st in steps[:last + 1]):
        return None
    rects: List[Rect] = [steps[last].core]
    for i in range(last, 0, -1):  # what step i reads of step i − 1's output
        rect = rects[0] if steps[i].geometry is None else tuple(
            _window(rects[0][a], *steps[i].geometry) for a in range(2))
        if any(lo < 0 or hi > steps[i - 1].size[a] for a, (lo, hi) in enumerate(rect)):
            return None
        rects.insert(0, rect)
    return _Prefix(last, rects, tuple(_window(rects[0][a], *steps[0].geometry) for a in range(2)))


def _template_sizes(steps: List[_Step], axis: int, m: int, last: int) -> Optional[List[int]]:
    """Each step's output length along ``axis`` through step ``last`` from a first map of length
    ``m``; None unless every map has the shape's edge bands and a row outside them."""
    size, top_bottom, sizes = m, (0, 0), [m]
    for step in steps[1:last + 1]:
        if step.geometry is not None:
            size, top_bottom = _advance(size, top_bottom, step.layer, step.geometry)
        if top_bottom != step.bands[axis] or size < sum(top_bottom) + 1:
            return None
        sizes.append(size)
    return sizes


def _template_side(steps: List[_Step], axis: int, last: int) -> Optional[List[int]]:
    """Step sizes along ``axis`` of the smallest template that serves steps up to ``last``: its
    first map congruent to the shape's modulo the strides after it (so every later map keeps the
    shape's bands); None if even the shape's own length does not serve."""
    n1 = steps[0].size[axis]
    period = 1
    for step in steps[1:last + 1]:
        period *= step.geometry[1] if step.geometry else 1
    for m in range(n1 % period or period, n1 + 1, period):
        sizes = _template_sizes(steps, axis, m, last)
        if sizes is not None:
            return sizes
    return None


def _choose_template(steps: List[_Step], frames: int):
    """(last buffered step, template first-map sides) that saves the most multiply-adds over
    ``frames`` frames of a shape: a deeper template serves more buffers but costs more to compute
    (once). Steps past the chosen one stop being buffered. None when no template pays."""
    best, saved = None, 0
    for last, step in enumerate(steps):
        if not step.buffered:
            continue
        (y0, y1), (x0, x1) = step.core
        saved += (step.size[0] * step.size[1] - (y1 - y0) * (x1 - x0)) * step.macs
        sides = [_template_side(steps, a, last) for a in range(2)]
        if None in sides:
            continue
        # the template's first map is its bias: no cost
        cost = sum(h * w * st.macs for st, h, w in zip(steps[1:last + 1], sides[0][1:], sides[1][1:]))
        gain = saved * frames - cost
        if gain > 0 and (best is None or gain > best[0]):
            best = (gain, last, (sides[0][0], sides[1][0]))
    if best is None:
        return None
    for step in steps[best[1] + 1:]:
        step.buffered = False
    return best[1:]


def _template(steps: List[_Step], sides, last: int, like: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The zero input's maps of the buffered steps (through step ``last``) at first-map size
    ``sides`` (batch of one)."""
    first = steps[0].layer
    c = first.out_channels
    bias = first.bias if first.bias is not None else torch.zeros(c)
    value = bias.to(like.dtype).view(1, c, 1, 1)
    if getattr(first, "attr", "none") == "relu":
        value = value.relu()
    h = value.expand(1, c, *sides).contiguous(memory_format=torch.channels_last)
    maps = {}
    for i, step in enumerate(steps[:last + 1]):
        if i > 0 and not isinstance(step.layer, _PASS_THROUGH):
            h = step.layer(h)
        if step.buffered:
            maps[step.name] = _condensed(h, step.bands)
    return maps


def _condensed(template: torch.Tensor, bands) -> torch.Tensor:
    """A copy of a template map of only what ``_fill`` reads: its edge bands and one middle row
    and column (a few rows of a wide map: templates are cheap to keep for many shapes)."""
    for axis, (top, bottom) in enumerate(bands):
        dim, n = 2 + axis, template.shape[2 + axis]
        if top + 1 + bottom < n:
            edges = [template.narrow(dim, 0, top + 1), template.narrow(dim, n - bottom, bottom)]
            template = torch.cat(edges, dim)
    return template.clone(memory_format=torch.channels_last)


def _axis_segments(n: int, nt: int, bands: Span):
    """(target lo, hi, template lo, hi) along one axis: the bands copied, the middle repeated."""
    top, bottom = bands
    parts = [(0, top, 0, top), (top, n - bottom, top, top + 1), (n - bottom, n, nt - bottom, nt)]
    return [part for part in parts if part[0] < part[1]]


def _clip(span: Span, segment):
    """``segment`` (target lo, hi, template lo, hi) cut to the target rows ``span``; None if
    they miss. A repeated middle row stays one template row."""
    t0, t1, s0, s1 = segment
    lo, hi = max(span[0], t0), min(span[1], t1)
    if lo >= hi:
        return None
    if s1 - s0 > 1:
        s0, s1 = s0 + lo - t0, s0 + hi - t0
    return lo, hi, s0, s1


def _fill(out: torch.Tensor, template: torch.Tensor, rows: Span, cols: Span, bands) -> None:
    """out[..., rows, cols] ← the zero input's values there, from ``template``."""
    segments = [_axis_segments(out.shape[2 + a], template.shape[2 + a], bands[a]) for a in range(2)]
    for ys in filter(None, (_clip(rows, seg) for seg in segments[0])):
        for xs in filter(None, (_clip(cols, seg) for seg in segments[1])):
            dst = out[:, :, ys[0]:ys[1], xs[0]:xs[1]]
            dst.copy_(template[:, :, ys[2]:ys[3], xs[2]:xs[3]].expand_as(dst))


class _Arena:
    """One flat allocation a shape's buffers are carved from, handed on to the next shape when
    its shape is dropped: fresh memory costs a page fault per 4 KiB on its first write, more than
    filling the border itself."""

    def __init__(self, nbytes: int, device):
        self.memory = torch.empty(nbytes, dtype=torch.uint8, device=device)
        self.used = 0

    def take(self, shape, dtype) -> torch.Tensor:
        """An uninitialised channels-last (N, C, H, W) tensor, from the arena while it has room."""
        n, c, h, w = shape
        nbytes = n * c * h * w * dtype.itemsize
        start = -(-self.used // 64) * 64
        if start + nbytes > self.memory.numel():
            return torch.empty(shape, dtype=dtype, device=self.memory.device).contiguous(
                memory_format=torch.channels_last)
        self.used = start + nbytes
        flat = self.memory[start:start + nbytes].view(dtype)
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)


@dataclass
class _Shape:
    """What the cache holds for one input shape."""
    buffers: Dict[str, Optional[torch.Tensor]]
    last: int  # the last buffered step (-1: none)
    arena: _Arena
    repeated: bool = False  # buffers chosen for many frames
    prefix: Optional[_Prefix] = None
    filled: Dict[str, Rect] = field(default_factory=dict)  # per buffer, where its border is written


def _read_rect(steps: List[_Step], i: int, keep) -> Rect:
    """The part of buffered step ``i``'s map a frame reads: what the next layer's core is computed
    from when that layer runs on its core too, else (a layer run whole, a map ``keep`` hands on,
    the chain's end) all of it. Only this much of the border is filled: the rest of a buffer is
    never read, and at a new size writing it was most of the buffers' assembly."""
    step = steps[i]
    whole = ((0, step.size[0]), (0, step.size[1]))
    if step.top in keep:
        return whole
    # a pass-through or in-place per-pixel layer (ReLU) leaves the map where it lies
    nxt = next((st for st in steps[i + 1:] if st.geometry is not None
                or not (isinstance(st.layer, _PASS_THROUGH) or getattr(st.layer, "inplace", False))), None)
    if nxt is None or not nxt.buffered:
        return whole
    if nxt.geometry is None:
        return step.core
    return tuple((max(0, lo), min(n, hi)) for (lo, hi), n in
                 ((_window(nxt.core[a], *nxt.geometry), step.size[a]) for a in range(2)))


def _contains(outer: Rect, inner: Rect) -> bool:
    return all(o[0] <= i[0] and i[1] <= o[1] for o, i in zip(outer, inner))


def _border_buffer(step: _Step, template: torch.Tensor, n: int, arena: _Arena, read: Rect) -> torch.Tensor:
    """A buffer of ``step``'s output at its shape with the border filled where ``read`` reaches
    (the core is left for the frame to write, the rest for nothing to read)."""
    out = arena.take((n, template.shape[1], *step.size), template.dtype)
    (y0, y1), (x0, x1) = step.core
    (r0, r1), (c0, c1) = read
    strips = (((r0, y0), (c0, c1)), ((y1, r1), (c0, c1)), ((y0, y1), (c0, x0)), ((y0, y1), (x1, c1)))
    for rows, cols in strips:
        _fill(out, template, rows, cols, step.bands)
    return out


class BorderCache:
    """Per-layer border buffers of the last few input shapes, and the templates they are made of.

    A new shape's buffers are assembled from a template (see module doc), chosen to pay on that
    one frame (a folder of photos); when the shape comes again (a video), from a deeper template
    that pays over many frames."""

    def __init__(self, capacity: int = 2, template_bytes: int = TEMPLATE_BYTES):
        self.capacity = capacity
        self._shapes: "OrderedDict[tuple, _Shape]" = OrderedDict()
        self._templates: "OrderedDict[tuple, dict]" = OrderedDict()
        self._template_bytes = template_bytes
        self._spare: Optional[_Arena] = None  # the last dropped shape's memory
        self._keep = frozenset()

    def _template_maps(self, steps, sides, last, x):
        key = (sides, last, x.dtype, x.device)
        maps = self._templates.get(key)
        if maps is None:
            maps = self._templates[key] = _template(steps, sides, last, x)
            while len(self._templates) > 1 and self._template_bytes < sum(
                    t.nbytes for kept in self._templates.values() for t in kept.values()):
                self._templates.popitem(last=False)
        self._templates.move_to_end(key)
        return maps

    def _arena(self, steps, x: torch.Tensor) -> _Arena:
        """Room for every buffer the shape could hold (pages never written cost nothing)."""
        need = sum(s.nbytes + 64 for s in steps if s.buffered)
        spare, self._spare = self._spare, None
        if spare is not None and spare.memory.numel() >= need and spare.memory.device == x.device:
            spare.used = 0
            return spare
        return _Arena(need + need // 4, x.device)  # slack: the next shape may be a bit larger

    def _build(self, net, names, x: torch.Tensor, old: Optional[_Shape], keep=()) -> _Shape:
        """Border buffers of ``x``'s shape; ``old``: this shape's buffers so far (kept where the
        deeper template still buffers the step and their border reaches as far); ``keep``: the
        maps ``run`` hands on (read whole)."""
        steps = _chain_plan(_leaves(net, names), tuple(x.shape), x.element_size())
        arena = old.arena if old is not None else self._arena(steps, x)
        chosen = _choose_template(steps, REPEATED_FRAMES if old is not None else 1)
        if chosen is None:
            return _Shape({}, -1, arena, old is not None)
        last, sides = chosen
        if old is not None and last == old.last:
            old.repeated = True
            return old
        prefix = _prefix(steps, last)
        maps = self._template_maps(steps, sides, last, x)
        buffers, filled = {}, {}
        for i, step in enumerate(steps):
            if step.buffered and (prefix is None or i >= prefix.last):
                read = _read_rect(steps, i, keep)
                kept = old.buffers.get(step.name) if old is not None else None
                if kept is not None and _contains(old.filled[step.name], read):
                    buffers[step.name], filled[step.name] = kept, old.filled[step.name]
                else:
                    buffers[step.name] = _border_buffer(step, maps[step.name], x.shape[0], arena, read)
                    filled[step.name] = read
        return _Shape(buffers, last, arena, old is not None, prefix, filled)

    def run(self, net, names, x: torch.Tensor, keep=()):
        """Apply ``net``'s layers ``names`` to ``x`` (see module doc): (output, {kept name: map}).

        The kept maps may be this cache's buffers: use them before the next call (the engine
        holds a lock over a whole batch)."""
        keep = frozenset(keep)
        if keep != self._keep:  # buffers are filled as far as the kept maps need
            self._shapes.clear()
            self._keep = keep
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self._shapes.get(key)
        if entry is None:
            while len(self._shapes) >= self.capacity:
                self._spare = self._shapes.popitem(last=False)[1].arena
            entry = self._shapes[key] = self._build(net, names, x, None, keep)
        elif not entry.repeated:
            entry = self._shapes[key] = self._build(net, names, x, entry, keep)
        self._shapes.move_to_end(key)
        buffers = entry.buffers
        # the image is all core
        core: Optional[Rect] = ((0, x.shape[2]), (0, x.shape[3]))
        kept = {}
        h = x
        leaves = list(_leaves(net, names))
        prefix = entry.prefix
        if prefix is not None and not {top for top, _, _ in leaves[:prefix.last + 1]} & set(keep):
            h, core = BorderCache._run_prefix(leaves, x, prefix, buffers)
            leaves = leaves[prefix.last + 1:]
        for top, name, layer in leaves:
            geometry = window_geometry(layer)
            if core is not None and geometry is None and not isinstance(layer, _POINTWISE):
                core = None  # an unknown layer: no tracking from here on
            if core is None:
                h = layer(h)
            elif geometry is None:  # per pixel: the core stays where it is
                h = BorderCache._pointwise(name, layer, h, core, buffers)
            else:
                h, core = BorderCache._windowed(name, layer, h, core, geometry, buffers)
            if top in keep:
                kept[top] = h  # a kept layer's last leaf comes last
        return h, kept

    @staticmethod
    def _run_prefix(leaves, x: torch.Tensor, prefix: _Prefix, buffers):
        """(the last prefix step's buffer with its core written, that core): steps 0..last on
        their widened rects, each from the previous one's output as it comes."""
        part, pads = _slice(x, prefix.window)
        part = F.pad(part, pads) if any(pads) else part
        for (_, _, layer), rect in zip(leaves[:prefix.last + 1], prefix.rects):
            geometry = window_geometry(layer)
            if geometry is not None:
                part = _apply_unpadded(layer, part, geometry)
            elif not isinstance(layer, _PASS_THROUGH):
                part = layer(part)
            if part.shape[2:] != tuple(hi - lo for lo, hi in rect):
                raise RuntimeError(f"border prefix: {tuple(part.shape)} where {rect} was planned")
        name = leaves[prefix.last][1]
        core = prefix.rects[-1]
        (y0, y1), (x0, x1) = core
        out = buffers[name]
        out[:, :, y0:y1, x0:x1] = part
        return out, core

    @staticmethod
    def _pointwise(name, layer, h, core, buffers):
        if isinstance(layer, _PASS_THROUGH):
            return h
        out = buffers.get(name)
        if out is None:
            return layer(h)
        (y0, y1), (x0, x1) = core
        out[:, :, y0:y1, x0:x1] = layer(h[:, :, y0:y1, x0:x1])
        return out

    @staticmethod
    def _windowed(name, layer, h, core, geometry, buffers):
        k, s, p, d = geometry
        out = buffers.get(name)
        if out is None:  # this layer runs whole at this size
            out = layer(h)
            size = out.shape[2:]
            return out, tuple(_touching(core[a], k, s, p, d, size[a]) for a in range(2))
        size = out.shape[2:]
        new_core = tuple(_touching(core[a], k, s, p, d, size[a]) for a in range(2))
        part = _run_on(layer, h, new_core, geometry)
        if part is None:  # the plan buffers only pools whose windows stay inside the map
            raise RuntimeError(f"border: {name}'s core needs the map's edge, which the plan ruled out")
        (y0, y1), (x0, x1) = new_core
        out[:, :, y0:y1, x0:x1] = part
        return out, new_core

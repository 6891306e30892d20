"""Synthetic scenes: textured shapes on a textured background, with exact label maps.

For demos, tests, benchmarks and training a small default model without downloading a dataset.
Each class has its own colour *and* its own texture (stripe direction and period, checker, dots,
speckle), jittered per instance, so a small CNN can tell classes apart from local appearance
alone; shape and class are tied too (every disc is class "disc"). Shapes are painted one after
the other, so later shapes occlude earlier ones, in the image and in the labels alike.

Everything is drawn from one ``np.random.Generator``: the same seed gives the same scene.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch.utils.data

__all__ = ["SYNTHETIC_CLASSES", "synthetic_scene", "SyntheticScenes"]

SYNTHETIC_CLASSES = ("background", "disc", "box", "triangle", "ring", "bar")


@dataclass(frozen=True)
class _Style:
    """How one class looks: mean RGB colour, a texture and its parameters."""
    colour: tuple[float, float, float]
    texture: str           # "blotches" | "stripes" | "checker" | "dots" | "speckle"
    period: float          # texture period in pixels (ignored by blotches and speckle)
    angle: float           # texture direction in degrees; per-instance jitter is added
    angle_jitter: float    # degrees
    amplitude: float       # brightness swing of the texture pattern
    noise: float           # per-pixel noise, standard deviation on the 0-255 scale


# Colours are far apart in RGB and every texture differs, so either cue alone mostly separates
# the classes; the per-instance jitter below keeps it from being a lookup table.
_STYLES = (
    _Style((115, 120, 100), "blotches", 0.0, 0.0, 0.0, 28.0, 7.0),     # background
    _Style((215, 70, 55), "stripes", 6.0, 0.0, 20.0, 35.0, 6.0),       # disc: ~vertical stripes
    _Style((55, 85, 215), "checker", 8.0, 0.0, 45.0, 30.0, 6.0),       # box: checkerboard
    _Style((205, 200, 45), "stripes", 3.5, 60.0, 15.0, 40.0, 5.0),     # triangle: fine diagonals
    _Style((170, 55, 185), "dots", 7.0, 0.0, 45.0, 45.0, 5.0),         # ring: dot grid
    _Style((55, 195, 170), "speckle", 0.0, 0.0, 0.0, 0.0, 32.0),       # bar: heavy speckle
)

_COLOUR_JITTER = 35.0      # per channel, uniform +-, per instance
_CONTRAST_JITTER = 0.3     # texture amplitude scale, uniform 1 +-, per instance
_PERIOD_JITTER = 0.15      # relative, per instance
_SIZE_RANGE = (0.08, 0.4)  # shape radius as a fraction of the shorter image side (log-uniform)
_OBJECTS_RANGE = (3, 8)    # default number of shapes, inclusive
_BLOTCH_CELL = 24.0        # background blotch size in pixels
_BLOTCH_CHROMA = 0.4       # background blotches vary mostly in brightness, a little in hue


@dataclass(frozen=True)
class _Shape:
    """One shape in a scene's layout: its class, centre, bounding radius and geometry."""
    class_id: int
    cy: float
    cx: float
    radius: float          # no pixel of the shape is farther than this from the centre
    angle: float           # radians
    a: float               # half-extent along the shape's own axis (semi-axis, half-length)
    b: float               # half-extent across it
    inner: float = 0.0     # ring: inner radius as a fraction of the outer one
    vertices: tuple = ()   # triangle: ((y, x), ...) relative to the centre


def _sample_shape(rng: np.random.Generator, height: int, width: int) -> _Shape:
    class_id = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    lo, hi = _SIZE_RANGE
    s = min(height, width) * math.exp(rng.uniform(math.log(lo), math.log(hi)))
    angle = rng.uniform(0, math.pi)
    name = SYNTHETIC_CLASSES[class_id]
    if name == "disc":
        a, b = s * rng.uniform(0.6, 1.0), s * rng.uniform(0.6, 1.0)
        return _Shape(class_id, cy, cx, max(a, b), angle, a, b)
    if name == "box":
        a, b = s * rng.uniform(0.5, 1.0), s * rng.uniform(0.5, 1.0)
        return _Shape(class_id, cy, cx, math.hypot(a, b), angle, a, b)
    if name == "triangle":
        # Vertices in angular order with every gap below pi: a convex, never degenerate triangle.
        phis = angle + np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.5, 0.5, 3)
        radii = s * rng.uniform(0.75, 1.1, 3)
        vertices = tuple((float(r * math.sin(p)), float(r * math.cos(p))) for r, p in zip(radii, phis))
        return _Shape(class_id, cy, cx, float(radii.max()), angle, s, s, vertices=vertices)
    if name == "ring":
        a = s * rng.uniform(0.8, 1.1)
        b = a * rng.uniform(0.75, 1.0)
        return _Shape(class_id, cy, cx, a, angle, a, b, inner=float(rng.uniform(0.4, 0.65)))
    # bar: a long thin rotated rectangle
    a, b = s * rng.uniform(0.9, 1.4), s * rng.uniform(0.12, 0.25)
    return _Shape(class_id, cy, cx, math.hypot(a, b), angle, a, b)


def _sample_layout(rng: np.random.Generator, height: int, width: int,
                   num_objects: int | None) -> list[_Shape]:
    """The shapes of a scene, in painting order (later ones occlude earlier ones).

    Drawn first from the scene's generator, before any texture, so that the tests can replay it.
    """
    if num_objects is None:
        num_objects = int(rng.integers(_OBJECTS_RANGE[0], _OBJECTS_RANGE[1] + 1))
    return [_sample_shape(rng, height, width) for _ in range(num_objects)]


def _shape_mask(shape: _Shape, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Which pixels (centre coordinates ``ys`` (h, 1) and ``xs`` (1, w)) the shape covers."""
    dy, dx = ys - shape.cy, xs - shape.cx
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    u, v = dx * c + dy * s, -dx * s + dy * c  # coordinates along and across the shape's axis
    name = SYNTHETIC_CLASSES[shape.class_id]
    if name == "disc":
        return (u / shape.a) ** 2 + (v / shape.b) ** 2 <= 1.0
    if name in ("box", "bar"):
        return (np.abs(u) <= shape.a) & (np.abs(v) <= shape.b)
    if name == "ring":
        r2 = (u / shape.a) ** 2 + (v / shape.b) ** 2
        return (r2 <= 1.0) & (r2 >= shape.inner ** 2)
    # triangle: inside when on the same side of all three edges
    (y0, x0), (y1, x1), (y2, x2) = shape.vertices
    e0 = (x1 - x0) * (dy - y0) - (y1 - y0) * (dx - x0)
    e1 = (x2 - x1) * (dy - y1) - (y2 - y1) * (dx - x1)
    e2 = (x0 - x2) * (dy - y2) - (y0 - y2) * (dx - x2)
    return ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))


def _pattern(rng: np.random.Generator, style: _Style, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The texture pattern in [-1, 1] at pixels (y, x), with this instance's jitter."""
    if style.texture == "speckle":
        return np.zeros(y.shape, np.float32)
    period = style.period * (1 + rng.uniform(-_PERIOD_JITTER, _PERIOD_JITTER))
    theta = math.radians(style.angle + rng.uniform(-style.angle_jitter, style.angle_jitter))
    phase_u, phase_v = rng.uniform(0, 2 * math.pi, 2)
    k = 2 * math.pi / period
    # In image coordinates, so that the pattern keeps its orientation wherever the shape lies.
    u = (x * math.cos(theta) + y * math.sin(theta)) * k + phase_u
    if style.texture == "stripes":
        return np.sin(u)
    v = (-x * math.sin(theta) + y * math.cos(theta)) * k + phase_v
    if style.texture == "checker":
        return np.where(np.sin(u) * np.sin(v) >= 0, 1.0, -1.0).astype(np.float32)
    # dots: bright spots on a slightly dark base
    return np.where(np.cos(u) + np.cos(v) > 1.0, 1.0, -0.35).astype(np.float32)


def _instance_colour(rng: np.random.Generator, style: _Style) -> np.ndarray:
    return (np.asarray(style.colour, np.float32)
            + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3).astype(np.float32))


# Uniform noise on [0, 1) is several times cheaper to draw than Gaussian and looks the same at
# these levels; times this factor it has unit standard deviation.
_UNIFORM_TO_UNIT = math.sqrt(12)


def _background(rng: np.random.Generator, noise: np.ndarray) -> np.ndarray:
    """The (3, height, width) background layer: the class colour, blotches about
    ``_BLOTCH_CELL`` pixels across (mostly brightness, a little hue: ``_BLOTCH_CHROMA``) and the
    per-pixel ``noise`` (uniform on [0, 1)) at the background's level.

    The blotches are a coarse random grid, bilinearly interpolated one axis at a time with
    gathers (not matrix products: BLAS threads fight over shared CPUs). Colour and amplitude are
    applied on the grid, and every full-size operation writes in place: on a 500×500 scene this
    is several times faster than the plain expression with its full-size temporaries.
    """
    style = _STYLES[0]
    _, height, width = noise.shape
    noise_scale = np.float32(style.noise * _UNIFORM_TO_UNIT)
    # The noise's mean (scale / 2) comes off the base colour rather than off every pixel.
    colour = _instance_colour(rng, style) - noise_scale / 2
    gh, gw = int(height / _BLOTCH_CELL) + 2, int(width / _BLOTCH_CELL) + 2
    coarse = rng.standard_normal((4, gh, gw), dtype=np.float32)
    grid = (colour[:, None, None]
            + np.float32(style.amplitude) * (coarse[:1] + np.float32(_BLOTCH_CHROMA) * coarse[1:]))
    fy = np.arange(height, dtype=np.float32) / np.float32(_BLOTCH_CELL)
    fx = np.arange(width, dtype=np.float32) / np.float32(_BLOTCH_CELL)
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    ty, tx = (fy - iy)[:, None], fx - ix
    rows = grid[:, iy] * (1 - ty) + grid[:, iy + 1] * ty              # (3, height, gw), small
    # left + t * (right - left), with the differences taken on the small grid
    image = np.take(rows, ix, axis=2)
    scratch = np.take(np.diff(rows, axis=2), ix, axis=2)
    scratch *= tx
    image += scratch
    np.multiply(noise, noise_scale, out=scratch)
    image += scratch
    return image


def _as_generator(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if isinstance(seed_or_rng, bool) or not isinstance(seed_or_rng, (int, np.integer)):
        raise TypeError(f"seed_or_rng must be an int or a np.random.Generator, "
                        f"got {type(seed_or_rng).__name__}")
    if seed_or_rng < 0:
        raise ValueError(f"seed_or_rng must be a non-negative seed, got {seed_or_rng}")
    return np.random.default_rng(int(seed_or_rng))


def _check_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _check_num_objects(num_objects) -> int | None:
    if num_objects is None:
        return None
    if isinstance(num_objects, bool) or not isinstance(num_objects, (int, np.integer)):
        raise TypeError(f"num_objects must be an integer or None, got {type(num_objects).__name__}")
    if num_objects < 0:
        raise ValueError(f"num_objects must be non-negative, got {num_objects}")
    return int(num_objects)


def synthetic_scene(seed_or_rng, height: int, width: int,
                    num_objects: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image, labels)``, an (H, W, 3) uint8 RGB image and an (H, W) uint8 label map
    with values in ``[0, len(SYNTHETIC_CLASSES))`` (no ignore pixels).

    ``seed_or_rng`` is a non-negative int seed or a ``np.random.Generator`` (which is advanced).
    ``num_objects`` shapes are painted in order over the background (default: 3 to 8, drawn from
    the generator); shapes may be cut by the border or hidden entirely by later ones.
    """
    rng = _as_generator(seed_or_rng)
    height, width = _check_size(height, "height"), _check_size(width, "width")
    layout = _sample_layout(rng, height, width, _check_num_objects(num_objects))

    # Channels first while painting, so the full-size background operations run on contiguous
    # planes. One uniform noise field serves every layer, each scaling it to its own level.
    noise = rng.random((3, height, width), dtype=np.float32)
    image = _background(rng, noise)
    labels = np.zeros((height, width), np.uint8)
    for shape in layout:
        # Work inside the shape's bounding box only: shapes are small next to the image.
        y0 = max(0, math.floor(shape.cy - shape.radius))
        y1 = min(height, math.ceil(shape.cy + shape.radius) + 1)
        x0 = max(0, math.floor(shape.cx - shape.radius))
        x1 = min(width, math.ceil(shape.cx + shape.radius) + 1)
        if y0 >= y1 or x0 >= x1:
            continue  # entirely outside the image
        style = _STYLES[shape.class_id]
        colour = _instance_colour(rng, style)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        iy, ix = np.nonzero(_shape_mask(shape, ys, xs))
        iy += y0
        ix += x0
        contrast = style.amplitude * (1 + rng.uniform(-_CONTRAST_JITTER, _CONTRAST_JITTER))
        pattern = _pattern(rng, style, iy.astype(np.float32), ix.astype(np.float32))
        brightness = pattern * np.float32(contrast)
        shape_noise = (noise[:, iy, ix] - 0.5) * np.float32(style.noise * _UNIFORM_TO_UNIT)
        image[:, iy, ix] = colour[:, None] + brightness + shape_noise
        labels[iy, ix] = shape.class_id

    # Gentle linear shading across the whole scene, as uneven lighting would give.
    gy, gx = rng.uniform(-0.25, 0.25, 2)
    shading = (1 + gy * np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
               + gx * np.linspace(-0.5, 0.5, width, dtype=np.float32))
    image *= shading
    image = np.clip(image, 0, 255, out=image).astype(np.uint8)  # truncating is as good as rounding
    return np.ascontiguousarray(image.transpose(1, 2, 0)), labels


def _size_range(size) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(h, w)`` or ``((hmin, hmax), (wmin, wmax))`` (inclusive) as two ranges."""
    try:
        h, w = size
    except (TypeError, ValueError):
        raise TypeError(f"size must be (h, w) or ((hmin, hmax), (wmin, wmax)), got {size!r}") from None
    ranges = []
    for value, name in ((h, "height"), (w, "width")):
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(f"size {name} range must be (min, max), got {value!r}")
            lo, hi = _check_size(value[0], f"size {name} min"), _check_size(value[1], f"size {name} max")
            if lo > hi:
                raise ValueError(f"size {name} range has min {lo} > max {hi}")
            ranges.append((lo, hi))
        else:
            v = _check_size(value, f"size {name}")
            ranges.append((v, v))
    return ranges[0], ranges[1]


class SyntheticScenes(torch.utils.data.Dataset):
    """``length`` synthetic scenes; item ``i`` is ``synthetic_scene(seed * 1_000_003 + i, h, w,
    num_objects)`` as numpy ``(image, labels)``.

    ``size`` is ``(h, w)`` or ``((hmin, hmax), (wmin, wmax))``, inclusive; with ranges, item ``i``'s
    size is drawn from its own generator seeded from the same number, so it is the same on every
    access and in every worker process.
    """

    classes = SYNTHETIC_CLASSES

    def __init__(self, length: int, size=(256, 256), seed: int = 0, num_objects: int | None = None):
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
            raise TypeError(f"length must be an integer, got {type(length).__name__}")
        if length < 0:
            raise ValueError(f"length must be non-negative, got {length}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.length = int(length)
        self.height_range, self.width_range = _size_range(size)
        self.seed = int(seed)
        self.num_objects = _check_num_objects(num_objects)

    def __len__(self) -> int:
        return self.length

    def scene_seed(self, index: int) -> int:
        return self.seed * 1_000_003 + index

    def scene_size(self, index: int) -> tuple[int, int]:
        """Item ``index``'s (height, width)."""
        (hmin, hmax), (wmin, wmax) = self.height_range, self.width_range
        if hmin == hmax and wmin == wmax:
            return hmin, wmin
        # A second stream of the same seed: the scene's own generator stays untouched.
        rng = np.random.default_rng([self.scene_seed(index), 1])
        return int(rng.integers(hmin, hmax + 1)), int(rng.integers(wmin, wmax + 1))

    def __getitem__(self, index) -> tuple[np.ndarray, np.ndarray]:
        i = operator.index(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes")
        h, w = self.scene_size(i)
        return synthetic_scene(self.scene_seed(i), h, w, self.num_objects)

    def __repr__(self) -> str:
        return (f"SyntheticScenes(length={self.length}, size=({self.height_range}, {self.width_range}), "
                f"seed={self.seed}, num_objects={self.num_objects})")

"""HHA encoding of a depth map (Gupta, Girshick, Arbelaez, Malik, ECCV 2014): three channels a
network trained on RGB can take, holding horizontal disparity, height above ground, and the angle
of the surface normal with gravity.

Follows Gupta's ``rcnn-depth`` (``rcnn/saveHHA.m``, ``mcg/depth_features/processDepthImage.m``),
which made the HHA images the FCN paper's NYUDv2 nets were trained on:

* camera frame: x right, y down, z forward; pixel (u, v) sees the ray ((u-cx)/fx, (v-cy)/fy, 1)
  with 0-based pixel indices (the NYU toolbox's MATLAB K is 1-based: subtract 1 from cx, cy).
* normals: least-squares plane through the back-projected points of a (2r+1)² window, fitted as
  n·p = 1 (``computeNormalsSquareSupport``), oriented away from the camera (n·p > 0). Radius 3 for
  the angle channel, radius 10 for estimating gravity, as ``processDepthImage.m``.
* gravity (``getYDir``): start from the camera's y axis (pointing down); split normals into
  near-parallel and near-perpendicular to it (45°, then 15°, five rounds each); take the direction
  that best aligns with the first set and is most orthogonal to the second: the eigenvector of
  Σ n_w n_wᵀ − Σ n_f n_fᵀ with the smallest eigenvalue.
* height = (−p)·gravity minus the lowest point's; if no point lies 0.9 m below the camera, the
  camera is taken to be 1.3 m above the floor.
* angle = angle between normal and gravity: floor 0°, walls 90°, ceiling 180°.

Channels as ``saveHHA.m`` writes them (RGB order of the PNG), rounded and clipped to 0..255:
disparity 31000 / depth in cm, with depth floored at 100 cm (so 310 / metres, at most 255 from
1.22 m in); height in cm (up to 2.55 m); angle in degrees + 38 (the reference's "+128-90 slack").
Where the reference fills missing depth first (it is given NYU's in-painted depth), we have no
point: such pixels are 0 in every channel; a pixel whose window has too few points for a plane
gets angle 180°, as the reference does with its NaN normals.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

ANGLE_RADIUS = 3  # normal window radius for the angle channel (processDepthImage.m: patchSize(1))
GRAVITY_RADIUS = 10  # smoother normals for the gravity estimate (patchSize(2))
GRAVITY_ROUNDS = ((45.0, 5), (15.0, 5))  # (angle threshold in degrees, iterations), getYDir
CAMERA_DOWN = np.array([0.0, 1.0, 0.0])


class HHAComponents(NamedTuple):
    """The geocentric quantities before scaling to bytes; NaN where depth is missing."""

    disparity: np.ndarray  # H×W, 1 / depth in 1/metres
    height: np.ndarray  # H×W, metres above the lowest point (see module docstring)
    angle: np.ndarray  # H×W, degrees between the surface normal and gravity
    gravity: np.ndarray  # (3,) unit vector pointing down, in camera coordinates
    valid: np.ndarray  # H×W bool, depth present


def _check_inputs(depth_m, K, gravity):
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2 or depth.shape[0] == 0 or depth.shape[1] == 0:
        raise ValueError(f"depth must be a non-empty H×W array in metres, got shape {depth.shape}")
    if np.any(depth < 0):
        raise ValueError("depth holds negative values; use 0 or NaN for missing depth")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"K must be a finite 3×3 camera matrix, got shape {K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K must have positive focal lengths fx, fy, got {K[0, 0]}, {K[1, 1]}")
    if gravity is not None:
        gravity = np.asarray(gravity, dtype=np.float64).reshape(-1)
        norm = np.linalg.norm(gravity) if gravity.shape == (3,) else 0.0
        if gravity.shape != (3,) or not np.isfinite(norm) or norm == 0:
            raise ValueError(f"gravity must be a non-zero 3-vector, got {gravity!r}")
        gravity = gravity / norm
    return depth, K, gravity


def _rays(shape, K):
    """Per-pixel (x/z, y/z) of the ray through each pixel."""
    h, w = shape
    u = (np.arange(w, dtype=np.float64) - K[0, 2]) / K[0, 0]
    v = (np.arange(h, dtype=np.float64) - K[1, 2]) / K[1, 1]
    return np.broadcast_to(u[None, :], shape), np.broadcast_to(v[:, None], shape)


def _box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the (2r+1)² window around each pixel (zero outside the image), per channel."""
    h, w = values.shape[:2]
    padded = np.zeros((h + 2 * radius + 1, w + 2 * radius + 1) + values.shape[2:])
    padded[radius + 1:radius + 1 + h, radius + 1:radius + 1 + w] = values
    table = padded.cumsum(0).cumsum(1)
    k = 2 * radius + 1
    return table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]


def _spread(valid: np.ndarray, radius: int) -> np.ndarray:
    """Determinant of the covariance of the window's valid pixel positions: 0 when they are
    collinear (or fewer than three), so no plane is determined. In pixels, so free of K's scale."""
    h, w = valid.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    u -= w / 2  # centred coordinates keep the moments small and exact
    v -= h / 2
    m = valid.astype(np.float64)
    sums = _box_sum(np.stack([m, m * u, m * v, m * u * u, m * v * v, m * u * v], axis=-1), radius)
    count = np.maximum(sums[..., 0], 1.0)
    mu, mv = sums[..., 1] / count, sums[..., 2] / count
    cuu = sums[..., 3] / count - mu * mu
    cvv = sums[..., 4] / count - mv * mv
    cuv = sums[..., 5] / count - mu * mv
    return np.where(sums[..., 0] >= 3, cuu * cvv - cuv * cuv, 0.0)


def surface_normals(points: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    """H×W×3 unit normals by the least-squares plane n·p = 1 through each window's points.

    With ``a = p/z`` and ``b = 1/z`` the plane is ``n·a = b``: sum ``a aᵀ`` and ``a b`` over the
    window with box filters and solve the 3×3 system per pixel (adjugate, vectorised). NaN where the
    window's points do not determine a plane.
    """
    z = np.where(valid, points[..., 2], 1.0)
    a = np.where(valid[..., None], points / z[..., None], 0.0)
    b = np.where(valid, 1.0 / z, 0.0)
    outer = (a[..., :, None] * a[..., None, :]).reshape(a.shape[:2] + (9,))
    sums = _box_sum(np.concatenate([outer, a * b[..., None]], axis=2), radius)
    rows = sums[..., :9].reshape(sums.shape[:2] + (3, 3))
    atb = sums[..., 9:]
    # inverse = [r1×r2, r2×r0, r0×r1] (as columns) / det; det ≥ 0 as AᵀA is positive semi-definite,
    # so adjugate·Atb = det·n points along n and needs no division by a tiny det
    adjugate = np.stack([np.cross(rows[..., 1, :], rows[..., 2, :]),
                         np.cross(rows[..., 2, :], rows[..., 0, :]),
                         np.cross(rows[..., 0, :], rows[..., 1, :])], axis=-1)
    det = np.einsum("...i,...i->...", rows[..., 0, :], adjugate[..., :, 0])
    normal = np.einsum("...ij,...j->...i", adjugate, atb)
    length = np.linalg.norm(normal, axis=-1)
    solvable = valid & (_spread(valid, radius) > 1e-6) & (det > 0) & (length > 0)
    normal = normal / np.where(solvable, length, 1.0)[..., None]
    # away from the camera: a surface point p has n·p > 0 (the reference's final orientation)
    flip = np.einsum("...i,...i->...", normal, points) < 0
    normal = np.where(flip[..., None], -normal, normal)
    return np.where(solvable[..., None], normal, np.nan)


def estimate_gravity(normals: np.ndarray, start: np.ndarray = CAMERA_DOWN) -> np.ndarray:
    """Gupta's ``getYDir``: the down direction that floor-like normals align with and wall-like
    normals are orthogonal to, refined from ``start`` (the camera's y axis)."""
    n = normals.reshape(-1, 3)
    n = n[np.all(np.isfinite(n), axis=1)]
    gravity = np.asarray(start, dtype=np.float64) / np.linalg.norm(start)
    if len(n) == 0:
        return gravity
    for threshold_deg, rounds in GRAVITY_ROUNDS:
        t = np.deg2rad(threshold_deg)
        for _ in range(rounds):
            cos = np.abs(n @ gravity)
            parallel, orthogonal = n[cos > np.cos(t)], n[cos < np.sin(t)]
            scatter = orthogonal.T @ orthogonal - parallel.T @ parallel
            # a faint pull toward the current estimate decides directions the normals leave free
            # (a view of one wall says nothing about roll), where getYDir could jump to any axis
            scatter -= 1e-6 * len(n) * np.outer(gravity, gravity)
            _, vectors = np.linalg.eigh(scatter)
            new = vectors[:, 0]  # smallest eigenvalue
            gravity = new * (1.0 if new @ gravity >= 0 else -1.0)
    return gravity


def hha_components(depth_m, K, gravity: Optional[np.ndarray] = None) -> HHAComponents:
    """Disparity, height and angle of every pixel of ``depth_m`` (metres; 0 or NaN = missing).

    ``K`` is the 3×3 camera matrix; ``gravity`` the down direction in camera coordinates (estimated
    from the normals when not given).
    """
    depth, K, gravity = _check_inputs(depth_m, K, gravity)
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, 0.0)
    rx, ry = _rays(depth.shape, K)
    points = np.stack([rx * z, ry * z, z], axis=-1)
    if gravity is None:
        gravity = estimate_gravity(surface_normals(points, valid, GRAVITY_RADIUS))
    normals = surface_normals(points, valid, ANGLE_RADIUS)

    up = -(points @ gravity)
    lowest = up[valid].min() if valid.any() else 0.0
    if lowest > -0.9:  # no point 0.9 m below the camera: assume it is 1.3 m above the floor
        lowest = -1.3
    height = np.where(valid, up - lowest, np.nan)
    cos = np.clip(normals @ gravity, -1.0, 1.0)
    angle = np.degrees(np.arccos(cos))
    angle = np.where(np.isnan(angle), 180.0, angle)  # no plane fit: the reference's NaN → 180
    angle = np.where(valid, angle, np.nan)
    disparity = np.where(valid, 1.0 / np.where(valid, depth, 1.0), np.nan)
    return HHAComponents(disparity, height, angle, gravity, valid)


def hha_encode(depth_m, K, gravity: Optional[np.ndarray] = None) -> np.ndarray:
    """H×W×3 uint8 HHA image of ``depth_m`` (metres), scaled as ``saveHHA.m`` (module docstring)."""
    c = hha_components(depth_m, K, gravity)
    depth_cm = 100.0 / np.where(c.valid, c.disparity, 1.0)
    disparity = 31000.0 / np.maximum(depth_cm, 100.0)  # the floor at 1 m keeps it bounded
    channels = np.stack([disparity, c.height * 100.0, c.angle + 128.0 - 90.0], axis=-1)
    channels = np.where(c.valid[..., None], channels, 0.0)
    # MATLAB's uint8() rounds half away from zero and saturates
    return np.clip(np.floor(channels + 0.5), 0, 255).astype(np.uint8)

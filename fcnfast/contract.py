"""The head-op contract as code (../shared/design/head-ops.md): the argument checks every
implementation runs before computing, output allocation, the label dtype and argmax rule, and
which deconvolutions are bilinear. A leaf: it imports torch and numpy, nothing of fcnfast, so the
reference, the native wrappers and the Triton kernels all import it and nothing above it.

Each ``check_<op>`` raises TypeError/ValueError naming the argument, and returns the resolved
geometry, so no kernel is ever launched on bad input. The PyTorch reference accepts float64 and any
deconvolution geometry (it is the ground truth); kernel backends pass ``kernel=True`` and get the
contract's limits (float32/float16/bfloat16, k <= 2s).
"""
from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch


def upsample_filt(size: int) -> np.ndarray:
    """The (size, size) bilinear kernel of the paper's surgery.py: f(ky)·f(kx),
    f(t) = 1 - |t - center| / factor. One formula for the models' initialisation and the ops'
    bilinear detection."""
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
REFERENCE_DTYPES = KERNEL_DTYPES + (torch.float64,)


def new_output(shape, dtype, device) -> torch.Tensor:
    """Every op allocates its outputs here (uninitialised; tests poison it to catch unwritten
    elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


def label_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 256 else torch.int32


def argmax_labels(scores: torch.Tensor, return_scores: bool = False, score_dtype=None):
    """The labels (N, H, W) of (N, C, H, W) class scores by the contract's rule — torch.argmax's:
    ties go to the lowest class, a NaN wins — in ``label_dtype``; with ``return_scores`` also the
    winning scores, in ``score_dtype`` (default: the scores' own)."""
    labels = scores.argmax(1)
    out = labels.to(label_dtype(scores.shape[1]))
    if not return_scores:
        return out
    best = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
    return out, best.to(score_dtype or scores.dtype)


def round_to_uint8(v: torch.Tensor) -> torch.Tensor:
    """floor(v + 0.5) clamped to [0, 255] as uint8: the contract's rounding of a pixel value (half
    up, as the overlay kernels; not round-half-to-even)."""
    return torch.floor(v + 0.5).clamp_(0, 255).to(torch.uint8)


def new_argmax_outputs(x: torch.Tensor, out_h: int, out_w: int, return_scores: bool):
    """(labels, scores or None) for an argmax op over x's classes: (N, H, W) each."""
    shape = (x.shape[0], out_h, out_w)
    labels = new_output(shape, label_dtype(x.shape[1]), x.device)
    return labels, (new_output(shape, x.dtype, x.device) if return_scores else None)


def new_network_input(frames: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """(N, 3, H, W) output of preprocess; channels-last memory when asked for."""
    n, h, w, _ = frames.shape
    if channels_last:
        return new_output((n, h, w, 3), dtype, frames.device).permute(0, 3, 1, 2)
    return new_output((n, 3, h, w), dtype, frames.device)


def interp_scale(n_in: int, n_out: int) -> float:
    """PyTorch's bilinear scale, static_cast<float>(in) / out in float32; a float32 value, so it
    passes exactly to a kernel's float argument."""
    return float(np.float32(n_in) / np.float32(n_out))


# --- small pieces -------------------------------------------------------------------------------

def _tensor(t, name: str, dims: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(t.shape)}")
    return t


def _float(t: torch.Tensor, name: str, kernel: bool):
    allowed = KERNEL_DTYPES if kernel else REFERENCE_DTYPES
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must be one of {names}; got {t.dtype}")


def _same_device(name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str):
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def pair(v, name: str) -> Tuple[int, int]:
    """An offset or size given as one int or (y, x)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    if not (isinstance(v, (tuple, list)) and len(v) == 2
            and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in v)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(v[0]), int(v[1])


def _stride(stride) -> int:
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    return int(stride)


def _window(offset, size, full, what: str):
    """Check that the (size) window at (offset) lies inside a map of size (full)."""
    (oy, ox), (hh, ww), (fh, fw) = offset, size, full
    if oy < 0 or ox < 0:
        raise ValueError(f"{what}: offset must be >= 0, got {(oy, ox)}")
    if oy + hh > fh or ox + ww > fw:
        raise ValueError(f"{what}: crop window {(hh, ww)} at offset {(oy, ox)} exceeds the map "
                         f"{(fh, fw)}")


def kernel_geometry_problem(k: int, s: int) -> str:
    """Why the kernel backends cannot run a k×k deconvolution of stride s ("" when they can): each
    output pixel must have at most 2×2 input taps, i.e. k <= 2·s."""
    if k > 2 * s:
        return (f"kernel {k} with stride {s} gives more than 2 taps per output pixel; kernel "
                f"backends need k <= 2*stride")
    return ""


# --- geometry of the upsampling ops -------------------------------------------------------------

@dataclass(frozen=True)
class Upsample:
    n: int
    c: int
    h: int  # input (coarse) size
    w: int
    k: int  # deconvolution kernel size and stride
    s: int
    oy: int  # crop offset into the full transposed-conv output
    ox: int
    out_h: int  # output (cropped) size
    out_w: int


def _deconv(x, weight, stride, offset, size, kernel: bool, what: str) -> Upsample:
    _tensor(x, "x", 4)
    _float(x, "x", kernel)
    n, c, h, w = x.shape
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"x must have at least one class and one pixel, got shape {tuple(x.shape)}")
    _tensor(weight, "weight", 4)
    _float(weight, "weight", kernel)
    _same_device("weight", weight, x, "x")
    if weight.shape[0] != c or weight.shape[1] != c or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must be (C, C, k, k) with C = {c} classes of x, "
                         f"got {tuple(weight.shape)}")
    k, s = int(weight.shape[2]), _stride(stride)
    problem = kernel_geometry_problem(k, s) if kernel else ""
    if problem:
        raise ValueError(f"{what}: {problem} (use backend='torch')")
    full = ((h - 1) * s + k, (w - 1) * s + k)
    oy, ox = pair(offset, "offset")
    out_h, out_w = full if size is None else pair(size, "size")
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size must be positive, got {(out_h, out_w)}")
    _window((oy, ox), (out_h, out_w), full, what)
    return Upsample(n, c, h, w, k, s, oy, ox, out_h, out_w)


def check_upsample_crop_add(x, weight, stride, skip, offset, skip_offset, size, skip_weight,
                            skip_bias, skip_scale, kernel: bool) -> Tuple[Upsample, Tuple[int, int]]:
    """Resolved geometry and the skip map's crop offset."""
    g = _deconv(x, weight, stride, offset, size, kernel, "upsample_crop_add")
    soy, sox = pair(skip_offset, "skip_offset")
    if skip is None:
        if skip_weight is not None or skip_bias is not None:
            raise ValueError("skip_weight/skip_bias given without skip features")
        return g, (soy, sox)
    _tensor(skip, "skip", 4)
    _float(skip, "skip", kernel)
    _same_device("skip", skip, x, "x")
    if skip.shape[0] != g.n:
        raise ValueError(f"skip has batch {skip.shape[0]} but x has {g.n}")
    if skip_weight is None:
        if skip_bias is not None:
            raise ValueError("skip_bias needs skip_weight")
        if skip.shape[1] != g.c:
            raise ValueError(f"skip scores must have C = {g.c} channels like x, got {skip.shape[1]} "
                             "(pass skip_weight to score features)")
    else:
        if not isinstance(skip_weight, torch.Tensor):
            raise TypeError(f"skip_weight must be a torch.Tensor, got {type(skip_weight).__name__}")
        _float(skip_weight, "skip_weight", kernel)
        _same_device("skip_weight", skip_weight, x, "x")
        f = skip.shape[1]
        if tuple(skip_weight.shape) not in ((g.c, f), (g.c, f, 1, 1)):
            raise ValueError(f"skip_weight must be (C, F) = ({g.c}, {f}) (or a 1×1 conv weight), "
                             f"got {tuple(skip_weight.shape)}")
        if skip_bias is not None:
            _tensor(skip_bias, "skip_bias", 1)
            _float(skip_bias, "skip_bias", kernel)
            _same_device("skip_bias", skip_bias, x, "x")
            if skip_bias.shape[0] != g.c:
                raise ValueError(f"skip_bias must have {g.c} values, got {skip_bias.shape[0]}")
    if not isinstance(skip_scale, (int, float, np.floating, np.integer)) or isinstance(skip_scale, bool) \
            or not math.isfinite(skip_scale):
        raise ValueError(f"skip_scale must be a finite number, got {skip_scale!r}")
    _window((soy, sox), (g.out_h, g.out_w), tuple(skip.shape[-2:]), "skip")
    return g, (soy, sox)


def check_upsample_crop_argmax(x, weight, stride, offset, size, kernel: bool) -> Upsample:
    if size is None:
        raise ValueError("upsample_crop_argmax needs size=(H, W), the image size")
    return _deconv(x, weight, stride, offset, size, kernel, "upsample_crop_argmax")


def check_interp_argmax(x, size, kernel: bool) -> Tuple[int, int]:
    _tensor(x, "x", 4)
    _float(x, "x", kernel)
    n, c, h, w = x.shape
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"x must have at least one class and one pixel, got shape {tuple(x.shape)}")
    out_h, out_w = pair(size, "size")
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size must be positive, got {(out_h, out_w)}")
    return out_h, out_w


def _frames(frames, name="frames") -> torch.Tensor:
    _tensor(frames, name, 4)
    if frames.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8, got {frames.dtype}")
    if frames.shape[-1] != 3:
        raise ValueError(f"{name} must be (N, H, W, 3) RGB, got shape {tuple(frames.shape)}")
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"{name} are empty: shape {tuple(frames.shape)}")
    return frames


def triple(v, name: str) -> Tuple[float, float, float]:
    try:
        vals = tuple(float(x) for x in (v if isinstance(v, (tuple, list, np.ndarray)) else [v] * 3))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or 3 numbers, got {v!r}") from None
    if len(vals) != 3 or not all(math.isfinite(x) for x in vals):
        raise ValueError(f"{name} must be 3 finite numbers, got {v!r}")
    return vals


def check_preprocess(frames, mean, std, scale, dtype, kernel: bool):
    """(mean, std, scale) as floats; std never 0."""
    _frames(frames)
    mean = triple(mean, "mean")
    std = (1.0, 1.0, 1.0) if std is None else triple(std, "std")
    if any(s == 0 for s in std):
        raise ValueError(f"std must not contain 0, got {std}")
    scale = triple(scale, "scale")[0] if not isinstance(scale, (tuple, list)) else None
    if scale is None:
        raise TypeError("scale must be one number")
    allowed = KERNEL_DTYPES if kernel else REFERENCE_DTYPES
    if dtype not in allowed:
        raise TypeError(f"dtype must be one of {', '.join(str(d) for d in allowed)}, got {dtype}")
    return mean, std, scale


def check_overlay(frames, labels, palette, alpha, check_labels: bool = True) -> float:
    """alpha as a float. ``check_labels=False``: the caller vouches every label is below the
    palette's size (an engine's own argmax with a palette of its classes), so the range check —
    one reduction over the labels and a device sync — is skipped."""
    _frames(frames)
    _tensor(labels, "labels", 3)
    if labels.dtype not in (torch.uint8, torch.int32, torch.int64):
        raise TypeError(f"labels must be uint8, int32 or int64, got {labels.dtype}")
    if tuple(labels.shape) != tuple(frames.shape[:3]):
        raise ValueError(f"labels {tuple(labels.shape)} must match frames (N, H, W) = "
                         f"{tuple(frames.shape[:3])}")
    _same_device("labels", labels, frames, "frames")
    _tensor(palette, "palette", 2)
    if palette.dtype != torch.uint8 or palette.shape[1] != 3 or palette.shape[0] < 1:
        raise ValueError(f"palette must be (C, 3) uint8, got {tuple(palette.shape)} {palette.dtype}")
    _same_device("palette", palette, frames, "frames")
    if not isinstance(alpha, (int, float, np.floating)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    # uint8 labels always fit a 256-colour palette; otherwise look (one reduction).
    if check_labels and labels.numel() and not (labels.dtype == torch.uint8 and palette.shape[0] >= 256):
        lo, hi = (int(v) for v in torch.aminmax(labels))  # one pass, one device sync
        if lo < 0 or hi >= palette.shape[0]:
            raise ValueError(f"labels must lie in [0, {palette.shape[0] - 1}] (the palette), found "
                             f"[{lo}, {hi}]")
    return float(alpha)


# --- which path a deconvolution takes -----------------------------------------------------------

_FILTER_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_FILTER_CACHE_SIZE = 64


def bilinear_filter(weight: torch.Tensor) -> Optional[torch.Tensor]:
    """The (k, k) float32 filter if ``weight`` is exactly diagonal bilinear, else None.

    Diagonal bilinear: W[c, c] equals surgery.py's upsample_filt(k) (in the weight's dtype) for
    every class and every off-diagonal W[ci, co] is zero. Then the op is depthwise and separable.
    Exact comparison, cached per tensor object and version (a weak reference proves the object is
    the same one, not a new tensor at a recycled address): a layer is checked once.
    """
    key = (id(weight), weight._version, weight.data_ptr())
    hit = _FILTER_CACHE.get(key)
    if hit is not None and hit[0]() is weight:
        _FILTER_CACHE.move_to_end(key)
        return hit[1]
    c, k = weight.shape[0], weight.shape[2]
    filt = torch.from_numpy(upsample_filt(k)).to(device=weight.device, dtype=weight.dtype)
    idx = torch.arange(c, device=weight.device)
    diag = weight[idx, idx]  # (C, k, k)
    nonzero_filter = int(torch.count_nonzero(filt))
    found = None
    if torch.equal(diag, filt.expand_as(diag)) and \
            int(torch.count_nonzero(weight)) == c * nonzero_filter:
        found = filt.float().contiguous()
    _FILTER_CACHE[key] = (weakref.ref(weight), found)
    if len(_FILTER_CACHE) > _FILTER_CACHE_SIZE:
        _FILTER_CACHE.popitem(last=False)
    return found

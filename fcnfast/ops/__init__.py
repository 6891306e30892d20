"""The one front door to the FCN head ops (../shared/design/head-ops.md), on every backend.

``backend="torch"`` is the PyTorch reference; ``"triton"`` the Triton kernels (``fcnfast.kernels``);
``"cuda"`` and ``"cpp"`` the native kernels (csrc/, called from ``fcnfast.ops.native``). ``"auto"``
picks the fastest backend that can run on the inputs' device; a named backend that cannot run raises RuntimeError saying
why, it never falls back.
"""
from __future__ import annotations

from typing import List

import torch

from .. import _ext
from . import checks, library, native, reference, winners  # noqa: F401  (library registers the custom ops)
from .checks import bilinear_filter, label_dtype

BACKENDS = ("torch", "triton", "cuda", "cpp")


def _status(backend: str, device_type=None):
    if backend == "torch":
        return True, ""
    if backend == "triton":
        return _ext.triton_status(device_type)
    if backend == "cpp":
        return _ext.cpp_status(device_type)
    return _ext.cuda_status(device_type)


def backends() -> List[str]:
    """Backends usable here, e.g. ["torch", "triton"] (Triton: with a GPU or TRITON_INTERPRET=1)."""
    return [b for b in BACKENDS if _status(b)[0]]


def _auto(device: torch.device, op: str = "upsample_crop_argmax") -> str:
    """The measured winner for ``op`` on ``device`` (``winners.py``), or the next usable backend."""
    for backend in winners.preference(op, device.type):
        if _status(backend, device.type)[0]:
            return backend
    return "torch"


def _impl(op: str, backend: str, anchor):
    """The implementation of ``op`` for ``backend`` on the device of tensor ``anchor``."""
    if not isinstance(anchor, torch.Tensor):
        raise TypeError(f"{op}: expected a torch.Tensor input, got {type(anchor).__name__}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = _auto(anchor.device, op)
    ok, why = _status(backend, anchor.device.type)
    if not ok:
        raise RuntimeError(f"{op}: backend {backend!r} cannot run here: {why}")
    if backend == "torch":
        return getattr(reference, op)
    if backend == "triton":
        return getattr(_ext.triton_kernels(), op)
    return getattr(native, op)


def _traced() -> bool:
    """Inside torch.compile's tracing: route through the custom ops (fcnfast/ops/library.py)."""
    return torch.compiler.is_compiling()


def _pair_list(v, name):
    return list(checks.pair(v, name))


def upsample_crop_add(x, weight, stride, skip=None, *, offset=(0, 0), skip_offset=(0, 0), size=None,
                      skip_weight=None, skip_bias=None, skip_scale=1.0, backend="auto"):
    """crop(convT(x, weight, stride), offset, size) + crop(skip score, skip_offset, size).

    ``skip`` is the skip score map (N, C, hs, ws), or the skip features (N, F, hs, ws) scored by
    the fused 1×1 conv ``skip_bias + skip_weight · (skip_scale · skip)`` when ``skip_weight`` (C, F)
    is given. ``size=None``: the full transposed-conv output. Returns (N, C, H, W) in x's dtype.
    """
    if _traced():
        return torch.ops.fcnfast.upsample_crop_add(
            x, weight, stride, skip, _pair_list(offset, "offset"), _pair_list(skip_offset, "skip_offset"),
            None if size is None else _pair_list(size, "size"), skip_weight, skip_bias,
            float(skip_scale), backend)
    return _impl("upsample_crop_add", backend, x)(
        x, weight, stride, skip, offset=offset, skip_offset=skip_offset, size=size,
        skip_weight=skip_weight, skip_bias=skip_bias, skip_scale=skip_scale)


def upsample_crop_argmax(x, weight, stride, offset, size, *, return_scores=False, backend="auto"):
    """argmax over classes of crop(convT(x, weight, stride), offset, size), without writing the
    full-resolution logits. Labels (N, H, W) uint8 (C <= 256) or int32; ties → lowest class, NaN
    wins. With ``return_scores`` also the winning score (x's dtype)."""
    if _traced():
        labels, scores = torch.ops.fcnfast.upsample_crop_argmax(
            x, weight, stride, _pair_list(offset, "offset"), _pair_list(size, "size"),
            return_scores, backend)
        return (labels, scores) if return_scores else labels
    return _impl("upsample_crop_argmax", backend, x)(x, weight, stride, offset, size,
                                                     return_scores=return_scores)


def interp_argmax(x, size, *, return_scores=False, backend="auto"):
    """argmax over classes of F.interpolate(x, size, bilinear, align_corners=False)."""
    if _traced():
        labels, scores = torch.ops.fcnfast.interp_argmax(x, _pair_list(size, "size"), return_scores,
                                                         backend)
        return (labels, scores) if return_scores else labels
    return _impl("interp_argmax", backend, x)(x, size, return_scores=return_scores)


def preprocess(frames, *, mean, std=None, scale=1.0, bgr=False, dtype=torch.float32,
               channels_last=False, backend="auto"):
    """uint8 (N, H, W, 3) RGB frames → (N, 3, H, W) network input ``(v·scale − mean) / std``.

    ``mean``/``std`` are in the output channel order (BGR when ``bgr``); ``scale`` is 1 for
    Caffe's 0–255 nets, 1/255 for torchvision's.
    """
    if _traced():
        return torch.ops.fcnfast.preprocess(
            frames, [float(m) for m in checks._triple(mean, "mean")],
            None if std is None else [float(v) for v in checks._triple(std, "std")], float(scale),
            bool(bgr), dtype, bool(channels_last), backend)
    return _impl("preprocess", backend, frames)(frames, mean=mean, std=std, scale=scale, bgr=bgr,
                                                dtype=dtype, channels_last=channels_last)


def overlay(frames, labels, palette, alpha=0.5, backend="auto"):
    """uint8 frames blended with palette[labels]: floor((1−alpha)·frame + alpha·colour + 0.5)."""
    if _traced():
        return torch.ops.fcnfast.overlay(frames, labels, palette, float(alpha), backend)
    return _impl("overlay", backend, frames)(frames, labels, palette, alpha)


__all__ = ["upsample_crop_add", "upsample_crop_argmax", "interp_argmax", "preprocess", "overlay",
           "backends", "bilinear_filter", "label_dtype", "BACKENDS"]

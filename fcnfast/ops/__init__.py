"""The one front door to the FCN head ops (../shared/design/head-ops.md), on every backend.

``backend="torch"`` is the PyTorch reference (``reference.py``); ``"triton"`` the Triton kernels
(``fcnfast.kernels``, from kernels/); ``"cuda"`` and ``"cpp"`` the native kernels (csrc/, called
through ``native.py``). ``"auto"`` takes the measured winners (``winners.AUTO_ORDER``) among the
backends that can run the op on the inputs' device and geometry; a named backend that cannot run
raises RuntimeError saying why, it never falls back.

This module is the only one that imports the implementations. It owns the backend choice:
``BACKENDS``, ``availability`` (can this backend run this op here, and why not), ``candidates``
(what ``"auto"`` or a named backend resolves to) and ``implementation`` (the dispatch table's
function). The engine resolves each op once at load and keeps the function it got.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from .. import _ext, contract
from . import custom_ops, native, reference  # noqa: F401  (custom_ops registers torch.ops.fcnfast.*)
from .winners import AUTO_ORDER

BACKENDS = ("torch", "triton", "cuda", "cpp")
OPS = ("preprocess", "overlay", "upsample_crop_add", "upsample_crop_argmax", "interp_argmax")
# The ops whose kernels take a deconvolution, and so the contract's k <= 2·stride limit.
DECONV_OPS = ("upsample_crop_add", "upsample_crop_argmax")

bilinear_filter = contract.bilinear_filter
label_dtype = contract.label_dtype
# preprocess's formula for float pixels (N, 3, H, W) in [0, 1]; reference only.
normalize = reference.normalize


def _triton_kernels() -> Dict[str, Callable]:
    kernels = _ext.triton_kernels()  # raises, saying why, where Triton cannot run
    return {
        "preprocess": kernels.preprocess,
        "overlay": kernels.overlay,
        "upsample_crop_add": kernels.upsample_crop_add,
        "upsample_crop_argmax": kernels.upsample_crop_argmax,
        "interp_argmax": kernels.interp_argmax,
    }


_NATIVE = {
    "preprocess": native.preprocess,
    "overlay": native.overlay,
    "upsample_crop_add": native.upsample_crop_add,
    "upsample_crop_argmax": native.upsample_crop_argmax,
    "interp_argmax": native.interp_argmax,
}

# backend → op → the function that runs it. Triton's row is filled on first use: importing the
# kernels imports triton, an optional dependency.
DISPATCH: Dict[str, Optional[Dict[str, Callable]]] = {
    "torch": {
        "preprocess": reference.preprocess,
        "overlay": reference.overlay,
        "upsample_crop_add": reference.upsample_crop_add,
        "upsample_crop_argmax": reference.upsample_crop_argmax,
        "interp_argmax": reference.interp_argmax,
    },
    "cpp": _NATIVE,  # one wrapper per op serves both native modules: fcnfast._C and fcnfast._cuda
    "cuda": _NATIVE,
    "triton": None,
}


def _check_names(op: str, backend: str) -> None:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; the head ops are {', '.join(OPS)}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")


def _device_type(device) -> Optional[str]:
    return None if device is None else torch.device(device).type


def availability(op: str, backend: str, device=None, *, kernel_size: Optional[int] = None,
                 stride: Optional[int] = None) -> Tuple[bool, str]:
    """Whether ``backend`` can run ``op`` on tensors of ``device`` (None: on some device here) and,
    for the deconvolution ops given ``kernel_size``/``stride``, at that geometry: ``(True, "")`` or
    ``(False, why)``."""
    _check_names(op, backend)
    if backend == "auto":
        raise ValueError("availability() is asked of one backend, not 'auto'")
    if backend == "torch":
        return True, ""
    dt = _device_type(device)
    ok, why = {"triton": _ext.triton_status, "cpp": _ext.cpp_status,
               "cuda": _ext.cuda_status}[backend](dt)
    if ok and op in DECONV_OPS and kernel_size is not None and stride is not None:
        why = contract.kernel_geometry_problem(kernel_size, stride)
        ok = not why
    return ok, why


def candidates(op: str, backend: str, device, *, kernel_size: Optional[int] = None,
               stride: Optional[int] = None) -> List[str]:
    """The backends to try for ``op`` on ``device``, in order: for ``"auto"`` the usable ones in
    the measured order, the reference last; for a named backend just it, or RuntimeError saying why
    it cannot run."""
    _check_names(op, backend)
    dt = _device_type(device)
    geometry = dict(kernel_size=kernel_size, stride=stride)
    if backend != "auto":
        ok, why = availability(op, backend, dt, **geometry)
        if not ok:
            raise RuntimeError(f"{op}: backend {backend!r} cannot run here: {why}")
        return [backend]
    order = AUTO_ORDER.get(dt, AUTO_ORDER["cpu"])[op]
    found = [b for b in order if availability(op, b, dt, **geometry)[0]]
    return found + (["torch"] if "torch" not in found else [])


def implementation(op: str, backend: str) -> Callable:
    """The function of the dispatch table that runs ``op`` on ``backend`` (not ``"auto"``)."""
    _check_names(op, backend)
    if backend == "auto":
        raise ValueError("implementation() needs a named backend; candidates() resolves 'auto'")
    if DISPATCH["triton"] is None and backend == "triton":
        DISPATCH["triton"] = _triton_kernels()
    return DISPATCH[backend][op]


def backends() -> List[str]:
    """Backends usable here for some device, e.g. ["torch", "cpp"] (Triton: with a GPU or
    TRITON_INTERPRET=1)."""
    return [b for b in BACKENDS if availability("preprocess", b)[0]]


def _resolve(op: str, backend: str, anchor, weight=None, stride=None) -> Callable:
    """The implementation of ``op`` for ``backend`` on the device of tensor ``anchor``."""
    if not isinstance(anchor, torch.Tensor):
        raise TypeError(f"{op}: expected a torch.Tensor input, got {type(anchor).__name__}")
    geometry = {}
    if backend == "auto" and isinstance(weight, torch.Tensor) and weight.dim() == 4:
        geometry = dict(kernel_size=int(weight.shape[-1]), stride=stride)
    return implementation(op, candidates(op, backend, anchor.device, **geometry)[0])


def _traced() -> bool:
    """Inside torch.compile's tracing: route through the custom ops (fcnfast/ops/custom_ops.py)."""
    return torch.compiler.is_compiling()


def _pair_list(v, name):
    return list(contract.pair(v, name))


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
    return _resolve("upsample_crop_add", backend, x, weight, stride)(
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
    return _resolve("upsample_crop_argmax", backend, x, weight, stride)(
        x, weight, stride, offset, size, return_scores=return_scores)


def interp_argmax(x, size, *, return_scores=False, backend="auto"):
    """argmax over classes of F.interpolate(x, size, bilinear, align_corners=False)."""
    if _traced():
        labels, scores = torch.ops.fcnfast.interp_argmax(x, _pair_list(size, "size"), return_scores,
                                                         backend)
        return (labels, scores) if return_scores else labels
    return _resolve("interp_argmax", backend, x)(x, size, return_scores=return_scores)


def preprocess(frames, *, mean, std=None, scale=1.0, bgr=False, dtype=torch.float32,
               channels_last=False, backend="auto"):
    """uint8 (N, H, W, 3) RGB frames → (N, 3, H, W) network input ``(v·scale − mean) / std``.

    ``mean``/``std`` are in the output channel order (BGR when ``bgr``); ``scale`` is 1 for
    Caffe's 0–255 nets, 1/255 for torchvision's.
    """
    if _traced():
        return torch.ops.fcnfast.preprocess(
            frames, [float(m) for m in contract.triple(mean, "mean")],
            None if std is None else [float(v) for v in contract.triple(std, "std")], float(scale),
            bool(bgr), dtype, bool(channels_last), backend)
    return _resolve("preprocess", backend, frames)(frames, mean=mean, std=std, scale=scale, bgr=bgr,
                                                   dtype=dtype, channels_last=channels_last)


def overlay(frames, labels, palette, alpha=0.5, backend="auto", *, check_labels=True):
    """uint8 frames blended with palette[labels]: floor((1−alpha)·frame + alpha·colour + 0.5).
    ``check_labels=False`` skips the label-range check (a reduction and a device sync) for
    labels known to lie below len(palette); out-of-range labels then read past the palette."""
    if _traced():
        return torch.ops.fcnfast.overlay(frames, labels, palette, float(alpha), backend, bool(check_labels))
    return _resolve("overlay", backend, frames)(frames, labels, palette, alpha, check_labels)


# The CPU engine's trunk kernels (engine/winograd.py, engine/layers.py): native only, no backend
# choice; the engine asks whether they are built and uses them where they are.
winograd_available = native.winograd_available
WINOGRAD_DTYPES = native.WINOGRAD_DTYPES
WINOGRAD_TILES = native.WINOGRAD_TILES
winograd_points = native.winograd_points
winograd_output_size = native.winograd_output_size
winograd_tiles = native.winograd_tiles
winograd_input = native.winograd_input
winograd_output = native.winograd_output
WINOGRAD_BF16_COLS = native.WINOGRAD_BF16_COLS
winograd_bf16_status = native.winograd_bf16_status
winograd_bf16_available = native.winograd_bf16_available
winograd_bf16_shape_ok = native.winograd_bf16_shape_ok
winograd_bf16_pack = native.winograd_bf16_pack
winograd_bf16_conv = native.winograd_bf16_conv
lrn_available = native.lrn_available
lrn = native.lrn
AMX_BLOCK = native.AMX_BLOCK
amx_status = native.amx_status
amx_available = native.amx_available
amx_pack_weight = native.amx_pack_weight
amx_matmul = native.amx_matmul

__all__ = ["upsample_crop_add", "upsample_crop_argmax", "interp_argmax", "preprocess", "overlay",
           "BACKENDS", "OPS", "DISPATCH", "availability", "candidates", "implementation",
           "backends", "bilinear_filter", "label_dtype", "normalize"]

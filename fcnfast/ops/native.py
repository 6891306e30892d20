"""Python side of the native head kernels: check, allocate, pass raw pointers.

One wrapper per op serves both native modules: CPU tensors go to ``fcnfast._C`` (backend "cpp"),
CUDA tensors to ``fcnfast._cuda`` (backend "cuda") on the current stream. The modules bind with
pybind11 on raw pointers, sizes, dtype codes and the stream handle (no libtorch), so the wrappers
check everything first (``checks``), make inputs contiguous and allocate the outputs.
"""
from __future__ import annotations

import torch

from .. import _ext
from . import checks

# Must match csrc/fcn_math.h's DType.
DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.uint8: 3,
              torch.int32: 4, torch.int64: 5}


def _module(t: torch.Tensor):
    return _ext.native_module("cuda" if t.is_cuda else "cpp")


def _stream_args(t: torch.Tensor) -> tuple:
    """The stream argument CUDA launchers take (none for the CPU module)."""
    if t.is_cuda:
        return (torch.cuda.current_stream(t.device).cuda_stream,)
    return ()


def _on_device(t: torch.Tensor):
    """A context that makes ``t``'s GPU the current one (a no-op for CPU tensors)."""
    return torch.cuda.device(t.device) if t.is_cuda else _Null()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def preprocess(frames, *, mean, std=None, scale=1.0, bgr=False, dtype=torch.float32,
               channels_last=False):
    mean, std, scale = checks.check_preprocess(frames, mean, std, scale, dtype, kernel=True)
    n, h, w, _ = frames.shape
    if channels_last:
        out = checks.new_output((n, h, w, 3), dtype, frames.device).permute(0, 3, 1, 2)
    else:
        out = checks.new_output((n, 3, h, w), dtype, frames.device)
    if n == 0:
        return out
    frames = frames.contiguous()
    divide = std != (1.0, 1.0, 1.0)
    with _on_device(frames):
        _module(frames).preprocess(frames.data_ptr(), n, h, w, scale, list(mean), list(std),
                                   bool(bgr), divide, bool(channels_last), out.data_ptr(),
                                   DTYPE_CODE[dtype], *_stream_args(frames))
    return out


def overlay(frames, labels, palette, alpha=0.5):
    alpha = checks.check_overlay(frames, labels, palette, alpha)
    n, h, w, _ = frames.shape
    out = checks.new_output((n, h, w, 3), torch.uint8, frames.device)
    if n == 0:
        return out
    frames, labels, palette = frames.contiguous(), labels.contiguous(), palette.contiguous()
    with _on_device(frames):
        _module(frames).overlay(frames.data_ptr(), labels.data_ptr(), DTYPE_CODE[labels.dtype],
                                palette.data_ptr(), palette.shape[0], n, h, w, 1.0 - alpha, alpha,
                                out.data_ptr(), *_stream_args(frames))
    return out

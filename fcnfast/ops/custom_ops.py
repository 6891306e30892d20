"""The head ops as ``torch.library`` custom ops (``torch.ops.fcnfast.*``), so ``torch.compile``
graphs that call ``fcnfast.ops`` trace them as single opaque nodes instead of breaking on the
kernels' Python launchers. Fake implementations give the output shapes from the contract contract.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .. import contract


def _front():
    # The front door runs the op eagerly when it is not being traced, so this never recurses.
    from .. import ops

    return ops


@torch.library.custom_op("fcnfast::upsample_crop_add", mutates_args=())
def upsample_crop_add(x: Tensor, weight: Tensor, stride: int, skip: Optional[Tensor],
                      offset: List[int], skip_offset: List[int], size: Optional[List[int]],
                      skip_weight: Optional[Tensor], skip_bias: Optional[Tensor], skip_scale: float,
                      backend: str) -> Tensor:
    return _front().upsample_crop_add(
        x, weight, stride, skip, offset=tuple(offset), skip_offset=tuple(skip_offset),
        size=None if size is None else tuple(size), skip_weight=skip_weight, skip_bias=skip_bias,
        skip_scale=skip_scale, backend=backend)


@upsample_crop_add.register_fake
def _(x, weight, stride, skip, offset, skip_offset, size, skip_weight, skip_bias, skip_scale, backend):
    g, _ = contract.check_upsample_crop_add(x, weight, stride, skip, tuple(offset), tuple(skip_offset),
                                          None if size is None else tuple(size), skip_weight,
                                          skip_bias, skip_scale, kernel=False)
    return x.new_empty((g.n, g.c, g.out_h, g.out_w))


@torch.library.custom_op("fcnfast::upsample_crop_argmax", mutates_args=())
def upsample_crop_argmax(x: Tensor, weight: Tensor, stride: int, offset: List[int], size: List[int],
                         return_scores: bool, backend: str) -> Tuple[Tensor, Tensor]:
    out = _front().upsample_crop_argmax(x, weight, stride, tuple(offset), tuple(size),
                                        return_scores=return_scores, backend=backend)
    return out if return_scores else (out, x.new_empty(0))


@upsample_crop_argmax.register_fake
def _(x, weight, stride, offset, size, return_scores, backend):
    g = contract.check_upsample_crop_argmax(x, weight, stride, tuple(offset), tuple(size), kernel=False)
    labels = x.new_empty((g.n, g.out_h, g.out_w), dtype=contract.label_dtype(g.c))
    return labels, x.new_empty((g.n, g.out_h, g.out_w) if return_scores else 0)


@torch.library.custom_op("fcnfast::interp_argmax", mutates_args=())
def interp_argmax(x: Tensor, size: List[int], return_scores: bool, backend: str) -> Tuple[Tensor, Tensor]:
    out = _front().interp_argmax(x, tuple(size), return_scores=return_scores, backend=backend)
    return out if return_scores else (out, x.new_empty(0))


@interp_argmax.register_fake
def _(x, size, return_scores, backend):
    h, w = contract.check_interp_argmax(x, tuple(size), kernel=False)
    labels = x.new_empty((x.shape[0], h, w), dtype=contract.label_dtype(x.shape[1]))
    return labels, x.new_empty((x.shape[0], h, w) if return_scores else 0)


@torch.library.custom_op("fcnfast::preprocess", mutates_args=())
def preprocess(frames: Tensor, mean: List[float], std: Optional[List[float]], scale: float,
               bgr: bool, dtype: torch.dtype, channels_last: bool, backend: str) -> Tensor:
    return _front().preprocess(frames, mean=mean, std=std, scale=scale, bgr=bgr, dtype=dtype,
                               channels_last=channels_last, backend=backend)


@preprocess.register_fake
def _(frames, mean, std, scale, bgr, dtype, channels_last, backend):
    n, h, w, _ = frames.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return frames.new_empty((n, 3, h, w), dtype=dtype).contiguous(memory_format=fmt)


@torch.library.custom_op("fcnfast::overlay", mutates_args=())
def overlay(frames: Tensor, labels: Tensor, palette: Tensor, alpha: float, backend: str,
            check_labels: bool) -> Tensor:
    return _front().overlay(frames, labels, palette, alpha, backend=backend, check_labels=check_labels)


@overlay.register_fake
def _(frames, labels, palette, alpha, backend, check_labels):
    return torch.empty_like(frames)

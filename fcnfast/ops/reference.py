"""PyTorch reference of the head ops: the ground truth every kernel backend is tested against.

Plain PyTorch, computing in float32 (float64 for float64 inputs), materialising what the kernels
never do (full transposed-conv output, full-resolution logits). Never imports a kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import contract


def _acc(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _crop(t, oy, ox, h, w):
    return t[..., oy:oy + h, ox:ox + w]


def _exact():
    # cuDNN convolutions default to TF32 on Ampere and later: not a float32 ground truth.
    return torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False)


def _upsample(x, weight, g: contract.Upsample) -> torch.Tensor:
    acc = _acc(x)
    with _exact():
        full = F.conv_transpose2d(x.to(acc), weight.to(acc), stride=g.s)
    return _crop(full, g.oy, g.ox, g.out_h, g.out_w)


def upsample_crop_add(x, weight, stride, skip=None, *, offset=(0, 0), skip_offset=(0, 0), size=None,
                      skip_weight=None, skip_bias=None, skip_scale=1.0):
    g, (soy, sox) = contract.check_upsample_crop_add(x, weight, stride, skip, offset, skip_offset, size,
                                                   skip_weight, skip_bias, skip_scale, kernel=False)
    y = _upsample(x, weight, g)
    if skip is not None:
        acc = y.dtype
        score = skip.to(acc)
        if skip_weight is not None:
            w = skip_weight.reshape(g.c, skip.shape[1], 1, 1).to(acc)
            b = None if skip_bias is None else skip_bias.to(acc)
            # FCN-8s at-once scales the features before the 1×1 scoring conv.
            with _exact():
                score = F.conv2d(score * skip_scale, w, b)
        y = y + _crop(score, soy, sox, g.out_h, g.out_w)
    return y.to(x.dtype)


def _labels(scores: torch.Tensor, dtype_of: torch.Tensor, return_scores: bool):
    return contract.argmax_labels(scores, return_scores, dtype_of.dtype)


def upsample_crop_argmax(x, weight, stride, offset, size, *, return_scores=False):
    g = contract.check_upsample_crop_argmax(x, weight, stride, offset, size, kernel=False)
    return _labels(_upsample(x, weight, g), x, return_scores)


def interp_argmax(x, size, *, return_scores=False):
    out_h, out_w = contract.check_interp_argmax(x, size, kernel=False)
    scores = F.interpolate(x.to(_acc(x)), size=(out_h, out_w), mode="bilinear", align_corners=False)
    return _labels(scores, x, return_scores)


def normalize(x: torch.Tensor, *, mean, std, scale, bgr: bool, dtype) -> torch.Tensor:
    """(N, 3, H, W) RGB values → ``(v·scale − mean) / std`` in the output channel order, computed in
    float32 (float64 for float64 output): the one formula of preprocessing, for uint8 frames here
    and for float pixels in ``images.to_network_input``."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x = x.to(acc)
    if bgr:
        x = x.flip(1)
    m = torch.tensor(mean, dtype=acc, device=x.device).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=acc, device=x.device).view(1, 3, 1, 1)
    return ((x * scale - m) / sd).to(dtype)


def preprocess(frames, *, mean, std=None, scale=1.0, bgr=False, dtype=torch.float32,
               channels_last=False):
    mean, std, scale = contract.check_preprocess(frames, mean, std, scale, dtype, kernel=False)
    y = normalize(frames.permute(0, 3, 1, 2), mean=mean, std=std, scale=scale, bgr=bgr, dtype=dtype)
    return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def overlay(frames, labels, palette, alpha=0.5, check_labels=True):
    alpha = contract.check_overlay(frames, labels, palette, alpha, check_labels)
    colors = palette[labels.long()].float()
    mixed = frames.float() * (1.0 - alpha) + colors * alpha
    return contract.round_to_uint8(mixed)  # v stays within [0, 255]

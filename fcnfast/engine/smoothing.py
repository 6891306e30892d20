"""Temporal smoothing of class scores across video frames, against per-frame flicker.

An exponential moving average ``s_t = a·s_{t−1} + (1 − a)·x_t`` of the class scores, taken on the
coarse score map the final op upsamples: the final upsampling (a transposed convolution and crop, or
torchvision's bilinear resize) is linear, so this equals the average of the full-resolution logits
at 1/stride² of the cost. A change of frame size, or a scene cut (consecutive frames differing by
more than ``reset`` in mean absolute intensity), restarts it. The state stays on the device and the
cut test never synchronises with the host.
"""
from __future__ import annotations

from typing import Optional

import torch

# Cut detection samples about this many pixels a side: enough to see a cut, cheap at any size.
_THUMB_SIDE = 64


def check_smoothing(smooth, reset) -> None:
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, (int, float))
                               or not 0.0 <= float(smooth) < 1.0):
        raise ValueError(f"smooth must be a number in [0, 1) (the weight of the past), got {smooth!r}")
    if reset is not None and (isinstance(reset, bool) or not isinstance(reset, (int, float))
                              or not 0.0 < float(reset) <= 1.0):
        raise ValueError(f"smooth_reset must be a number in (0, 1] or None, got {reset!r}")


def frame_thumbnails(pixels: torch.Tensor) -> torch.Tensor:
    """(N, h, w) float32 gray in [0, 1], subsampled: uint8 (N, H, W, 3) or float (N, 3, H, W)."""
    if pixels.dtype == torch.uint8:
        H, W = pixels.shape[1:3]
        sy, sx = max(1, H // _THUMB_SIDE), max(1, W // _THUMB_SIDE)
        return pixels[:, ::sy, ::sx, :].float().mean(-1) / 255.0
    H, W = pixels.shape[2:4]
    sy, sx = max(1, H // _THUMB_SIDE), max(1, W // _THUMB_SIDE)
    return pixels[:, :, ::sy, ::sx].float().mean(1)


class ScoreSmoother:
    """The running average of one stream. ``update`` takes a batch of consecutive frames' scores
    (N, C, h, w) and their pixels, and returns the smoothed scores (float32)."""

    def __init__(self, smooth: float, reset: Optional[float] = 0.3):
        check_smoothing(smooth, reset)
        self.smooth = float(smooth)
        self.reset_threshold = None if reset is None else float(reset)
        self.state: Optional[torch.Tensor] = None
        self._thumb: Optional[torch.Tensor] = None
        self._key = None  # the frame size (and score shape) the state belongs to

    def reset(self) -> None:
        """Forget the past (a scene cut the caller knows of)."""
        self.state = None
        self._thumb = None

    def update(self, scores: torch.Tensor, pixels: Optional[torch.Tensor] = None) -> torch.Tensor:
        scores = scores.float()
        key = (tuple(scores.shape[1:]), None if pixels is None else
               tuple(pixels.shape[1:3] if pixels.dtype == torch.uint8 else pixels.shape[2:4]))
        if key != self._key:
            # A new frame size: the old scores describe another picture (the coarse map alone may
            # keep its size: pad-100 trunks map nearby sizes to one coarse grid).
            self.reset()
            self._key = key
        thumbs = (frame_thumbnails(pixels) if pixels is not None and self.reset_threshold is not None
                  else None)
        out = torch.empty_like(scores)
        a = self.smooth
        for i in range(scores.shape[0]):
            x = scores[i]
            if self.state is None:
                s = x.clone()
            else:
                s = a * self.state + (1.0 - a) * x
                if thumbs is not None and self._thumb is not None:
                    cut = (thumbs[i] - self._thumb).abs().mean() > self.reset_threshold
                    s = torch.where(cut, x, s)
            self.state = s
            if thumbs is not None:
                self._thumb = thumbs[i]
            out[i] = s
        return out

"""Which backend ``"auto"`` picks per op and device: the measured winners (benchmarks/RESULTS.md).

Refresh this table from the figures when kernels change. Triton on CPU tensors is its interpreter
(correct but slow), so it is never picked on CPU; the CUDA C++ kernels have no GPU figures yet, so
on GPU they only follow Triton.
"""
from __future__ import annotations

from typing import Tuple

# H200, 1080p, batch 8 (RESULTS.md "Triton head ops"): Triton wins preprocess (14x the
# composition), overlay (8.1x), upsample_crop_argmax (5.8x) and interp_argmax (2.7x);
# upsample_crop_add's Triton kernel runs at 0.12-0.25x the composition, so the reference wins it.
_GPU = {
    "preprocess": ("triton", "cuda", "torch"),
    "overlay": ("triton", "cuda", "torch"),
    "upsample_crop_argmax": ("triton", "cuda", "torch"),
    "interp_argmax": ("triton", "cuda", "torch"),
    "upsample_crop_add": ("torch", "triton", "cuda"),
}
# 2-core CPU, 720p (RESULTS.md "C++ CPU head ops"): the C++ kernels win every op (1.4x-108x).
_CPU = ("cpp", "torch")


def preference(op: str, device_type: str) -> Tuple[str, ...]:
    """Backends for ``op`` on ``device_type``, fastest first (usable or not)."""
    if device_type == "cuda":
        return _GPU.get(op, ("triton", "cuda", "torch"))
    return _CPU

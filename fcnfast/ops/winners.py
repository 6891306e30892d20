"""The order ``"auto"`` tries backends in, per op and device: the measured winners.

Refresh from benchmarks/RESULTS.md ("Triton head ops" for the GPU, "C++ CPU head ops" for the
CPU) when kernels change. Triton on CPU tensors is its interpreter (correct but slow), so it is
never in the CPU order; the CUDA C++ kernels have no GPU figures yet, so they follow Triton. The
reference comes last everywhere: it runs every input the contract allows.
"""
from __future__ import annotations

from typing import Dict, Tuple

AUTO_ORDER: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "cuda": {
        "preprocess": ("triton", "cuda", "torch"),
        "overlay": ("triton", "cuda", "torch"),
        "upsample_crop_argmax": ("triton", "cuda", "torch"),
        "interp_argmax": ("triton", "cuda", "torch"),
        # Triton's kernel loses to the PyTorch composition here on the H200.
        "upsample_crop_add": ("torch", "triton", "cuda"),
    },
    "cpu": {op: ("cpp", "torch") for op in ("preprocess", "overlay", "upsample_crop_add",
                                            "upsample_crop_argmax", "interp_argmax")},
}

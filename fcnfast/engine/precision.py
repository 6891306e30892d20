"""The engine's compute dtype per device."""
from __future__ import annotations

from typing import Optional

import torch

ENGINE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def cpu_bf16_native() -> bool:
    """oneDNN computes bfloat16 natively here (AMX or AVX512-BF16); otherwise bf16 is emulated
    and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_dtype(device: torch.device, requested: Optional[torch.dtype]) -> torch.dtype:
    """``requested`` when given; else float16 on GPU, bfloat16 on CPUs that compute it natively,
    float32 elsewhere."""
    if requested is not None:
        if requested not in ENGINE_DTYPES:
            raise TypeError(f"the engine computes in float32, float16 or bfloat16; got {requested} "
                            "(float64 runs on backend='torch')")
        return requested
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bf16_native() else torch.float32

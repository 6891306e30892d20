"""The engine: an execution plan built once at load time that runs a reference model's weights
through the fast path (cuDNN/oneDNN trunk in the best layout, fcnfast.ops head)."""
from __future__ import annotations

from .engine import Engine
from .precision import compute_dtype, cpu_bf16_native

__all__ = ["Engine", "compute_dtype", "cpu_bf16_native"]

"""The engine: an execution plan built once at load time that runs a reference model's weights
through the fast path (cuDNN/oneDNN trunk in the best layout, fcnfast.ops head)."""
from __future__ import annotations

"""Process-wide settings fcnfast makes once, at import, before any kernel is built."""
from __future__ import annotations

import os

# oneDNN keeps its last 1024 kernels by default. A folder of photos in a few dozen sizes that
# recur (a few cameras) needs more: ResNet101 builds ~400 a size, and evicted ones are built again
# on every image (benchmarks/RESULTS.md: issue 15).
PRIMITIVE_CACHE_CAPACITY = 16384
# oneDNN reads either name (ONEDNN_ first) when it builds its first kernel.
_CAPACITY_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")


def keep_more_kernels() -> None:
    """Raise oneDNN's kernel cache to PRIMITIVE_CACHE_CAPACITY unless the user set it. It takes
    effect if no oneDNN kernel has been built in this process yet (import fcnfast first)."""
    if not any(name in os.environ for name in _CAPACITY_VARIABLES):
        os.environ[_CAPACITY_VARIABLES[0]] = str(PRIMITIVE_CACHE_CAPACITY)

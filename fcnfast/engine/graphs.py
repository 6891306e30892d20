"""CUDA graphs of the whole per-batch sequence, one per input shape, least recently used evicted.

A frame stream at a fixed size launches ~40 kernels per batch; replaying one captured graph removes
their launch gaps. Captures are keyed by (shape, dtype) of the input, so a change of frame size or
batch captures (or reuses) another graph, and results stay correct when shapes change.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Tuple

import torch


class GraphCache:
    def __init__(self, fn: Callable[[torch.Tensor], Tuple[torch.Tensor, ...]], capacity: int = 8):
        if capacity < 1:
            raise ValueError(f"graph_cache_size must be >= 1, got {capacity}")
        self.fn = fn
        self.capacity = capacity
        self._graphs: "OrderedDict[tuple, tuple]" = OrderedDict()
        # One memory pool for all captures: they replay one at a time on one stream, and each
        # keeps its outputs alive, so they may share intermediates' memory.
        self._pool = None

    def __len__(self) -> int:
        return len(self._graphs)

    def _capture(self, example: torch.Tensor):
        static_in = example.clone()
        # Warm up outside the capture on a side stream: Triton compiles, caches fill, cuDNN picks
        # its algorithms (none of which may happen while capturing).
        side = torch.cuda.Stream(example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.fn(static_in)
        torch.cuda.current_stream(example.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    def run(self, x: torch.Tensor):
        """The outputs of ``fn(x)``, by replaying the graph for x's shape. They are copies: the
        graph's own buffers are overwritten by the next replay."""
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(x)
            self._graphs[key] = entry
            while len(self._graphs) > self.capacity:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return tuple(t.clone() for t in static_out)

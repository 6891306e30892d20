"""Overlapping a stream of frame batches on the GPU: host→device copy, compute and device→host copy
on three CUDA streams with two buffer slots, so batch i computes while batch i+1 is uploaded and
batch i−1's labels come back. Results are yielded in order; memory stays flat (slots are reused).
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator, Tuple

import torch



class _Slot:
    """Pinned host and device buffers for one batch shape."""

    def __init__(self, shape, dtype, engine, device):
        self.shape, self.dtype = tuple(shape), dtype
        self.host_in = torch.empty(shape, dtype=dtype, pin_memory=True)
        self.dev_in = torch.empty(shape, dtype=dtype, device=device)
        h, w = shape[1:3] if dtype == torch.uint8 else shape[2:4]
        self.host_labels = torch.empty(engine.label_shape(shape[0], h, w), dtype=engine.label_dtype,
                                       pin_memory=True)
        self.host_finite = torch.empty((), dtype=torch.bool, pin_memory=True)

    def fits(self, pixels: torch.Tensor) -> bool:
        return tuple(pixels.shape) == self.shape and pixels.dtype == self.dtype


def cuda_pipeline(batches: Iterable[Tuple[torch.Tensor, object]], engine) -> Iterator[Tuple[torch.Tensor, object]]:
    """(pixel batch, anything) → (host labels, the same anything), in order. Batches on the host
    go through pinned buffers; batches already on the GPU are used where they are."""
    device = engine.device
    upload, compute, download = (torch.cuda.Stream(device) for _ in range(3))
    slots = [None, None]
    in_flight = deque()  # (slot, device pixels, tag, done event), oldest first

    def finish():
        slot, source, tag, done = in_flight.popleft()
        done.synchronize()
        labels = slot.host_labels
        if not bool(slot.host_finite):  # precision guard: rare, so simply synchronous
            labels, _ = engine.settle(source, None, None, False)
            labels = labels.cpu()
        return labels.clone(), tag

    for i, (pixels, tag) in enumerate(batches):
        k = i % 2
        if len(in_flight) == 2:  # slot k's previous batch must be fully done before reuse
            yield finish()
        if slots[k] is None or not slots[k].fits(pixels):
            slots[k] = _Slot(pixels.shape, pixels.dtype, engine, device)
        slot = slots[k]
        if pixels.is_cuda:  # frames already on the GPU: nothing to upload
            source = pixels
            compute.wait_stream(torch.cuda.current_stream(device))
            source.record_stream(compute)
        else:
            source = slot.dev_in
            slot.host_in.copy_(pixels)
            with torch.cuda.stream(upload):
                source.copy_(slot.host_in, non_blocking=True)
            compute.wait_stream(upload)
        with torch.cuda.stream(compute):
            labels, _, finite = engine.launch(source)
        download.wait_stream(compute)
        with torch.cuda.stream(download):
            labels.record_stream(download)
            finite.record_stream(download)
            slot.host_labels.copy_(labels, non_blocking=True)
            slot.host_finite.copy_(finite, non_blocking=True)
            done = torch.cuda.Event()
            done.record(download)
        in_flight.append((slot, source, tag, done))
    while in_flight:
        yield finish()

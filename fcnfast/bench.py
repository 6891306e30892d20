"""``fcnfast bench``: a quick frames/s table of one model — the float32 reference (what a
pytorch-fcn user runs) against the engine — on generated scenes. ``benchmarks/throughput.py`` is
the full comparison (torch.compile, onnxruntime, the GPU grid)."""
from __future__ import annotations

import platform
import statistics
import time

import numpy as np
import torch


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _median_fps(fn, device, frames: int, repeats: int) -> float:
    fn()  # warm-up: first-call costs (weight packing, border buffers, graphs) are not frame rate
    samples = []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - t0)
    return frames / statistics.median(samples)


def quick_table(model: str = "default", *, size=(480, 640), batch: int = 1, device=None,
                repeats: int = 5, arch=None) -> str:
    from .api import Segmenter, load
    from .data.synthetic import synthetic_scene

    if batch < 1 or repeats < 1:
        raise ValueError(f"--batch and --repeats must be >= 1, got {batch} and {repeats}")
    engine = load(model, device=device, arch=arch)
    # The engine keeps its float32 reference model: the same weights, not loaded twice.
    reference = Segmenter(engine.model, class_names=engine.classes,
                          input_convention=engine.input_convention, palette=engine.palette,
                          device=engine.device, backend="torch", dtype=torch.float32)
    h, w = size
    frames = np.stack([synthetic_scene(i, h, w)[0] for i in range(batch)])
    rows = []
    labels = {}
    for name, seg in (("a  float32 reference (eager PyTorch)", reference), ("e  fcnfast engine", engine)):
        labels[name] = seg.segment_batch(frames, batch_size=batch)
        fps = _median_fps(lambda: seg.segment_batch(frames, batch_size=batch), seg.device, batch,
                          repeats)
        rows.append((name, seg, fps))
    (na, _, fa), (ne, se, fe) = rows
    agree = float((labels[na] == labels[ne]).mean())
    where = torch.cuda.get_device_name(se.device) if se.device.type == "cuda" else cpu_model()
    lines = [f"fcnfast bench: {se.arch} ({model}), {h}x{w}, batch {batch}, on {se.device} ({where}, "
             f"{torch.get_num_threads()} threads), median of {repeats}",
             f"  {'column':<40} {'dtype':>9} {'frames/s':>9}"]
    for name, seg, fps in rows:
        lines.append(f"  {name:<40} {str(seg.dtype).replace('torch.', ''):>9} {fps:9.2f}")
    lines.append(f"  engine / reference: {fe / fa:.2f}x; labels equal on {100 * agree:.2f}% of pixels; "
                 f"head ops: {', '.join(f'{k}={v}' for k, v in se.op_backends.items())}")
    return "\n".join(lines)

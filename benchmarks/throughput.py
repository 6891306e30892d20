"""End-to-end throughput of fcnfast: uint8 host frame in → labels on the host.

Today it times the reference path (plain PyTorch, float32) on a random-weight model; the engine
issue adds the eager fp16 / torch.compile / onnxruntime / fcnfast columns. perf_counter on CPU,
CUDA events on GPU; warm-up, then the median of many runs.

    python benchmarks/throughput.py --quick        # seconds, CPU smoke run
    python benchmarks/throughput.py --arch fcn8s --size 500x500 --batch 1 --json out.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

import fcnfast
from fcnfast.models import build_model


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device, warmup: int, iters: int) -> list:
    """Seconds per call of ``fn``, ``iters`` samples after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def bench_one(arch, size, batch, device, warmup, iters, num_classes=21):
    h, w = size
    torch.manual_seed(0)
    model = build_model(arch, num_classes)
    # Random score layers, so the labels are not all class 0.
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == num_classes:
            torch.nn.init.normal_(m.weight, std=0.01)
    seg = fcnfast.Segmenter(model, device=device, backend="torch")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)
    x = torch.randn(batch, 3, h, w, device=seg.device)

    def end_to_end():
        if batch == 1:
            seg.segment(frames[0])
        else:
            seg.segment_batch(frames, batch_size=batch)

    def model_only():
        with torch.inference_mode():
            seg.model(x)

    e2e = statistics.median(time_fn(end_to_end, seg.device, warmup, iters))
    dev = statistics.median(time_fn(model_only, seg.device, warmup, iters))
    return {
        "arch": arch, "height": h, "width": w, "batch": batch, "device": str(seg.device),
        "column": "reference fp32 (torch)", "frames_per_s": batch / e2e,
        "end_to_end_ms": e2e * 1e3, "model_ms": dev * 1e3,
    }


def _size(s):
    try:
        h, w = s.lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 500x500 (HxW), got {s!r}") from None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny CPU run (seconds): FCN-8s, 64x64, batch 1")
    p.add_argument("--arch", nargs="+", default=["fcn8s"], choices=sorted(fcnfast.models.ARCHS))
    p.add_argument("--size", nargs="+", type=_size, default=[(500, 500)], help="HxW sizes")
    p.add_argument("--batch", nargs="+", type=int, default=[1])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.arch, args.size, args.batch, args.device = ["fcn8s"], [(64, 64)], [1], "cpu"
        args.warmup, args.iters = 1, 3
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = []
    print(f"fcnfast {fcnfast.__version__}, torch {torch.__version__}, device "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'arch':<14}{'size':>11}{'batch':>6}  {'column':<24}{'frames/s':>10}{'e2e ms':>10}{'model ms':>10}")
    for arch in args.arch:
        for size in args.size:
            for batch in args.batch:
                r = bench_one(arch, size, batch, device, args.warmup, args.iters)
                rows.append(r)
                print(f"{arch:<14}{f'{size[0]}x{size[1]}':>11}{batch:>6}  {r['column']:<24}"
                      f"{r['frames_per_s']:>10.2f}{r['end_to_end_ms']:>10.1f}{r['model_ms']:>10.1f}")
    if args.json:
        meta = {"torch": torch.__version__, "fcnfast": fcnfast.__version__, "python": sys.version.split()[0],
                "date": time.strftime("%Y-%m-%d")}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()

"""The engine's switches, one against another on this device: border skipping on/off, CUDA graphs
on/off — the measurements that decide their defaults (border skipping is on for CPU only until a
GPU run says otherwise).

Each variant runs ``Engine.run`` on uint8 frames already on the device (steady state: the same
frame size over and over, as in a video), timed with CUDA events on GPU / perf_counter on CPU,
warm-up then the median; its labels are compared with the first variant's.

    python benchmarks/engine_options.py                        # CPU: FCN-8s 300x451 and 500x500
    python benchmarks/engine_options.py --sizes 1080x1920 --batch 8 --json out.json   # GPU
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import _size, make_frames, random_model  # noqa: E402  (same models, frames, sizes)
from timing import device_name, git_revision, load_average, measure, now  # noqa: E402

from fcnfast.engine import Engine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["fcn8s"])
    p.add_argument("--sizes", nargs="+", type=_size, default=None, help="HxW")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sizes = args.sizes or ([(300, 451), (500, 500)] if device.type == "cpu" else
                           [(500, 500), (1080, 1920)])
    dtype = getattr(torch, args.dtype) if args.dtype else None
    graphs = (False, True) if device.type == "cuda" else (False,)
    rows = []
    print(f"engine options on {device_name(device)}, {now()}, git {git_revision()}, "
          f"load {load_average()}")
    for arch, (h, w) in itertools.product(args.models, sizes):
        model = random_model(arch, 21).to(device)
        frames = torch.from_numpy(make_frames(args.batch, h, w)).to(device)
        base = None
        for skip_border, cuda_graphs in itertools.product((False, True), graphs):
            engine = Engine(model, device, dtype, skip_border=skip_border, cuda_graphs=cuda_graphs)
            t = measure(lambda: engine.run(frames), device, warmup=2, min_repeats=3,
                        budget_s=3.0 if device.type == "cpu" else 1.0)
            labels = engine.run(frames)
            same = 1.0 if base is None else float((labels == base).float().mean())
            base = labels if base is None else base
            row = dict(model=arch, height=h, width=w, batch=args.batch, device=device_name(device),
                       dtype=str(engine.dtype).replace("torch.", ""), skip_border=skip_border,
                       cuda_graphs=cuda_graphs, ms=t.ms, fps=args.batch / t.median_s,
                       repeats=t.repeats, timer=t.timer, labels_equal_first=same)
            rows.append(row)
            print(f"{arch} {h}x{w} b{args.batch} {row['dtype']} border={int(skip_border)} "
                  f"graphs={int(cuda_graphs)}: {t.ms:8.1f} ms  {row['fps']:7.1f} frames/s  "
                  f"labels = first variant on {100 * same:.3f}%")
            engine = None  # free its buffers before the next variant is built
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": now(), "git": git_revision(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

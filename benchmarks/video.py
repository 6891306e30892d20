"""Frames/s of ``fcnfast video`` end to end (decode and encode included) against the loop a user
writes and against ``Segmenter.stream`` alone, on one generated clip, in one run (issue 11).

  a  a plain loop: PyAV decode → numpy preprocessing (pytorch-fcn's: BGR, float64 minus the mean,
     CHW) → eager PyTorch fp32 → argmax → numpy overlay (float blend, ``.round()``) → libx264 encode,
     one frame at a time, on the calling thread.
  b  ``Segmenter.stream(frames, batch_size)`` alone, on frames decoded beforehand (labels only).
  c  ``fcnfast.video.segment_video(clip, out.mp4, seg)``: decode thread → stream → overlay op →
     encode thread, overlay mode, libx264 (NVENC on a GPU when it opens).

The target is c ≥ 90% of b (decode and encode hidden behind compute). Each column is timed over
the whole clip with perf_counter (CUDA synchronised), after a warm-up on its first frames; the
median of ``--repeats`` runs.

    python benchmarks/video.py                         # CPU: default model, 480p, 48 frames
    python benchmarks/video.py --arch fcn8s --size 1080x1920 --frames 300   # GPU headline
    python benchmarks/video.py --json benchmarks/data/video_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from fractions import Fraction

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import make_frames, numpy_chw, random_model  # noqa: E402
from timing import cpu_model, device_name, git_revision, load_average, measure, now  # noqa: E402

import fcnfast  # noqa: E402
from fcnfast.video import segment_video  # noqa: E402


def make_clip(path: str, frames: int, h: int, w: int, fps: int = 30) -> None:
    """Synthetic scenes drifting sideways, H.264 — what a camera clip costs to decode."""
    import av

    scenes = make_frames(4, h, w + frames)
    with av.open(path, "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.ascontiguousarray(scenes[(i // 30) % 4][:, i:i + w])
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)


def decoded(clip: str):
    import av

    with av.open(clip) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def plain_loop(clip: str, out_path: str, model, conv, palette, device, alpha=0.5) -> int:
    import av

    n = 0
    with av.open(clip) as inp, av.open(out_path, "w") as out:
        src = inp.streams.video[0]
        vs = out.add_stream("libx264", rate=src.average_rate)
        vs.width, vs.height, vs.pix_fmt = src.codec_context.width, src.codec_context.height, "yuv420p"
        for frame in inp.decode(src):
            img = frame.to_ndarray(format="rgb24")
            x = torch.from_numpy(numpy_chw(img, conv)).float()[None].to(device)
            with torch.no_grad():
                labels = model(x).argmax(1)[0].cpu().numpy()
            mixed = (1 - alpha) * img.astype(np.float32) + alpha * palette[labels].astype(np.float32)
            f = av.VideoFrame.from_ndarray(mixed.round().astype(np.uint8), format="rgb24")
            f.pts = n
            for p in vs.encode(f):
                out.mux(p)
            n += 1
        for p in vs.encode():
            out.mux(p)
    return n


def timed(fn, device, repeats: int) -> float:
    """Median seconds of whole-clip runs (perf_counter between synchronisations: the work spans
    threads and CUDA streams)."""
    return measure(fn, device, warmup=0, min_repeats=repeats, cuda_events=False).median_s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="checkpoint or 'default' (the built-in model)")
    p.add_argument("--arch", help="a full-size reference net with random weights instead (e.g. fcn8s)")
    p.add_argument("--size", default=None, help="H×W of the clip (default: 480x854 CPU, 1080x1920 GPU)")
    p.add_argument("--frames", type=int, default=None, help="clip length (default 48 CPU, 300 GPU)")
    p.add_argument("--batch", type=int, default=None, help="batch size of b and c (default 2 CPU, 8 GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--columns", default="abc")
    p.add_argument("--json", help="append the row to this JSON list")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    h, w = (int(v) for v in (args.size or ("1080x1920" if gpu else "480x854")).lower().split("x"))
    frames_n = args.frames or (300 if gpu else 48)
    batch = args.batch or (8 if gpu else 2)
    if args.arch:
        model = random_model(args.arch, 21)
        seg = fcnfast.Segmenter(model, device=device)
        name = f"{args.arch} (random weights, 21 classes)"
    else:
        seg = fcnfast.load(args.model, device=device)
        name = f"{seg.arch} ({args.model})"
    conv = seg.input_convention
    palette = np.ascontiguousarray(seg.palette)
    tmp = tempfile.mkdtemp(prefix="fcnfast-video-bench-")
    clip = os.path.join(tmp, "clip.mp4")
    make_clip(clip, frames_n, h, w)
    frames = decoded(clip)
    row = dict(date=now(), git=git_revision(), device=device_name(device), cpu=cpu_model(),
               torch=torch.__version__, model=name, size=f"{h}x{w}", frames=frames_n, batch=batch,
               dtype=str(seg.dtype).replace("torch.", ""), op_backends=seg.op_backends,
               load=load_average(), command=" ".join(["python", "benchmarks/video.py"] + (argv or sys.argv[1:])))
    # Warm-up: first-call costs (oneDNN packing, border buffers, CUDA graphs) are not frame rate.
    list(seg.stream(frames[:batch * 2], batch_size=batch))
    results = {}
    if "a" in args.columns:
        ref_model = seg.model  # the float32 reference the Segmenter keeps
        s = timed(lambda: plain_loop(clip, os.path.join(tmp, "a.mp4"), ref_model, conv, palette, device),
                  device, max(1, args.repeats - 2))
        results["a"] = frames_n / s
    if "b" in args.columns:
        s = timed(lambda: sum(1 for _ in seg.stream(frames, batch_size=batch)), device, args.repeats)
        results["b"] = frames_n / s
    if "c" in args.columns:
        out = os.path.join(tmp, "c.mp4")
        s = timed(lambda: segment_video(clip, out, seg, batch_size=batch, progress=False),
                  device, args.repeats)
        results["c"] = frames_n / s
    row.update({f"fps_{k}": round(v, 3) for k, v in results.items()})
    print(f"fcnfast video benchmark: {name}, {h}x{w}, {frames_n} frames, batch {batch}, "
          f"{row['dtype']} on {row['device']} ({row['cpu']}), load {row['load']}")
    titles = {"a": "a  plain loop (PyAV + numpy + eager fp32 + numpy overlay)",
              "b": "b  Segmenter.stream on decoded frames (labels only)",
              "c": "c  fcnfast video (decode + segment + overlay + encode)"}
    for k in "abc":
        if k in results:
            extra = ""
            if k == "c" and "b" in results:
                extra += f"   c/b = {results['c'] / results['b']:.2f}"
                row["c_over_b"] = round(results["c"] / results["b"], 3)
            if k != "a" and "a" in results:
                extra += f"   vs a: {results[k] / results['a']:.2f}x"
            print(f"  {titles[k]:<62} {results[k]:8.2f} frames/s{extra}")
    if args.json:
        rows = json.load(open(args.json)) if os.path.exists(args.json) else []
        rows.append(row)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

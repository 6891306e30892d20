"""Images/s of ``fcnfast.distributed.segment_dataset`` on a local Ray against a plain loop over the
same files, and onnxruntime against fcnfast on the same model and size (issue 14).

Every method reads the same folder of generated PNG scenes, segments each image and writes its
label PNG (palette, value = class id) into a fresh folder, so all do the same work end to end:

  loop   for each file: ``Segmenter.segment(path)`` (fcnfast's defaults), the label PNG saved
  ray    ``segment_dataset(folder, dest, model)`` on the Ray started before the timings (its start
         is reported apart); each run builds its actor pool, so the job time includes the actors'
         start and model load, which the loop does outside its timing. "steady" is the rate from
         the first result on, what a long job converges to.
  ort    the same model exported with ``fcnfast.export_onnx`` (uint8 frames in, labels out) in an
         onnxruntime session (CPU provider, the machine's cores), the same loop around it

perf_counter; one warm-up run of each, then the median of ``--repeats`` runs. Ray's overhead is
``loop time / ray time`` (target: ray at most 15% slower than the loop on one machine at 500×500).

    python benchmarks/dataset.py                        # 500x500, 480 images, the built-in model
    python benchmarks/dataset.py --count 48 --size 200x300 --repeats 1 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fcnfast  # noqa: E402
from fcnfast.data.synthetic import synthetic_scene  # noqa: E402
from fcnfast.render import label_png  # noqa: E402

from timing import cpu_model, git_revision, load_average  # noqa: E402


def make_folder(root: str, count: int, h: int, w: int, distinct: int = 16) -> list:
    """``count`` PNG files of ``distinct`` scenes in turn (a scene takes about a second to draw)."""
    from PIL import Image

    scenes = [Image.fromarray(synthetic_scene(i, h, w)[0]) for i in range(min(count, distinct))]
    paths = []
    for i in range(count):
        path = os.path.join(root, f"scene{i:05d}.png")
        scenes[i % len(scenes)].save(path)
        paths.append(path)
    return paths


def run_loop(seg, paths, dest):
    os.makedirs(dest)
    t = time.perf_counter()
    for p in paths:
        label_png(seg.segment(p), seg.palette).save(
            os.path.join(dest, os.path.splitext(os.path.basename(p))[0] + ".png"))
    return time.perf_counter() - t


def run_ort(session, palette, paths, dest):
    from PIL import Image

    os.makedirs(dest)
    t = time.perf_counter()
    for p in paths:
        frames = np.asarray(Image.open(p).convert("RGB"))[None]
        labels = session.run(None, {"frames": frames})[0][0]
        label_png(labels, palette).save(
            os.path.join(dest, os.path.splitext(os.path.basename(p))[0] + ".png"))
    return time.perf_counter() - t


def run_ray(folder, dest, model, batch):
    from fcnfast.distributed import segment_dataset

    t = time.perf_counter()
    summary = segment_dataset(folder, dest, model, batch_size=batch)
    total = time.perf_counter() - t
    # steady rate: outputs' modification times, from the first batch's last to the last
    times = sorted(os.stat(os.path.join(dest, f)).st_mtime for f in os.listdir(dest)
                   if f.endswith(".png"))
    first = min(batch, len(times)) - 1
    steady = ((len(times) - 1 - first) / (times[-1] - times[first])
              if len(times) > first + 1 and times[-1] > times[first] else None)
    assert summary["written"] == len(times), summary
    return total, steady


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--size", default="500x500")
    p.add_argument("--count", type=int, default=480)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", help="append the figures as one JSON row")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))

    import ray

    tmp = tempfile.mkdtemp(prefix="fcnfast-dataset-bench-")
    try:
        folder = os.path.join(tmp, "images")
        os.makedirs(folder)
        paths = make_folder(folder, args.count, h, w)
        seg = fcnfast.load(args.model, device="cpu")
        n = len(paths)
        runs = {"loop": [], "ray": [], "ray_steady": [], "ort": []}
        t = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        ray_start = time.perf_counter() - t

        import onnxruntime as ort

        onnx_path = os.path.join(tmp, "model.onnx")
        fcnfast.export_onnx(seg, onnx_path, verify=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])

        for k in range(args.repeats + 1):  # the first round warms up
            runs["loop"].append(run_loop(seg, paths, os.path.join(tmp, f"loop{k}")))
            total, steady = run_ray(folder, os.path.join(tmp, f"ray{k}"), args.model, args.batch)
            runs["ray"].append(total)
            runs["ray_steady"].append(steady)
            runs["ort"].append(run_ort(session, seg.palette, paths, os.path.join(tmp, f"ort{k}")))
            for d in ("loop", "ray", "ort"):
                shutil.rmtree(os.path.join(tmp, f"{d}{k}"))
        ray.shutdown()
        med = {k: statistics.median(v[1:]) for k, v in runs.items() if k != "ray_steady"}
        steady = statistics.median([s for s in runs["ray_steady"][1:] if s]) if any(runs["ray_steady"][1:]) else None
        row = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "git": git_revision(),
            "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "model": args.model, "arch": seg.arch, "dtype": str(seg.dtype).replace("torch.", ""),
            "size": [h, w], "images": n, "batch": args.batch, "repeats": args.repeats,
            "ray": ray.__version__, "onnxruntime": ort.__version__, "ray_start_s": ray_start,
            "loop_images_per_s": n / med["loop"], "ray_images_per_s": n / med["ray"],
            "ray_steady_images_per_s": steady, "ort_images_per_s": n / med["ort"],
            # what the job pays once (actor process start, imports, model load, first frame)
            "ray_fixed_s": med["ray"] - n / steady if steady else None,
            "ray_steady_vs_loop": steady * med["loop"] / n if steady else None,
            "ray_vs_loop": med["loop"] / med["ray"], "ort_vs_fcnfast_loop": med["loop"] / med["ort"],
            "load_average": load_average(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"fcnfast dataset benchmark on {row['cpu']} ({row['cores']} cores), {n} images "
          f"{h}x{w}, model {args.model} ({row['arch']}, {row['dtype']}), ray {row['ray']}, "
          f"onnxruntime {row['onnxruntime']}, git {row['git']}")
    print(f"  local Ray start (not timed below): {ray_start:.1f} s")
    print(f"  loop  Segmenter.segment      {row['loop_images_per_s']:7.2f} images/s")
    print(f"  ray   segment_dataset        {row['ray_images_per_s']:7.2f} images/s "
          f"({row['ray_vs_loop']:.2f}× the loop; steady "
          f"{steady and f'{steady:.2f}' or '-'} images/s, {row['ray_steady_vs_loop'] or 0:.2f}× the "
          f"loop, after a fixed {row['ray_fixed_s'] or 0:.1f} s per job)")
    print(f"  ort   onnxruntime loop       {row['ort_images_per_s']:7.2f} images/s "
          f"(fcnfast loop = {1 / row['ort_vs_fcnfast_loop']:.2f}× onnxruntime)")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Single images of mixed sizes (a folder of photos, ``fcnfast segment *.jpg``): fcnfast against the
runtimes a user would pick instead, on the CPU (issue 15).

Each column segments the same ``--images`` frames, every one of its own size (H and W drawn
uniformly from ``--min``..``--max``), one at a time, uint8 host image in → labels on the host:

  a  eager PyTorch fp32 the pytorch-fcn way (numpy preprocessing, float32 model, argmax)
  b  eager bf16 channels-last where oneDNN computes bf16 natively (else fp32 channels-last)
  c  ``torch.compile(b's model, dynamic=True)`` with Inductor freezing: one compile for every
     size (compile time reported apart; recompiles inside the pass are counted in its time)
  d  onnxruntime: the file ``fcnfast.export_onnx`` writes (dynamic N, H, W), CPU provider
  f  OpenVINO: ``openvino.convert_model`` of the fp32 model + argmax with dynamic H and W,
     compiled once for the CPU plugin (latency hint, its default precision)
  e  fcnfast: ``fcnfast.Segmenter(model).segment(image)``, defaults

Before the timed pass every column runs two images of sizes outside the pass (warm-up: weights
packed, sessions created, the dynamic graph compiled). The pass goes image by image, each image
through every column in turn (the order rotating), timed with perf_counter and summed per column:
the machine's speed drifts, and interleaving gives every column the same drift (each image is a
new size for every column, so there is nothing to take a median over within a pass;
``--repeats`` runs the pass again and reports the median pass). Labels are compared with a on firm pixels (a's top-2
margin > 3% of its score range).

    python benchmarks/folder.py --models fcn8s fcn_resnet50 --json benchmarks/data/folder_cpu.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fcnfast  # noqa: E402
from fcnfast.models import ARCHS  # noqa: E402

import throughput as tp  # noqa: E402
from timing import (AS_AVX2, cpu_model, emulated_cpu_class, git_revision, keep_freed_memory,  # noqa: E402
                    load_average, malloc_setting, now)


def sizes(n: int, lo: int, hi: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))) for _ in range(n)]


def column_fns(col: str, model, conv, lp_dtype):
    """(setup seconds, fn: uint8 H×W×3 → labels, notes) for one column."""
    t0 = time.perf_counter()
    notes = {}
    if col == "a":
        def fn(img):
            with torch.no_grad():
                return model(tp.pytorch_fcn_input(img[None], conv, "cpu")).argmax(1)[0].numpy()
    elif col in ("b", "c"):
        lp = copy.deepcopy(model).to(dtype=lp_dtype, memory_format=torch.channels_last).eval()
        pre = tp.torch_preprocessor(conv, "cpu", lp_dtype)
        if col == "c":
            import torch._dynamo as dynamo
            import torch._inductor.config as inductor_config

            dynamo.reset()
            inductor_config.freezing = True
            lp = torch.compile(lp, dynamic=True)
        net = lp

        def fn(img):
            with torch.no_grad():
                return net(pre(img[None])).argmax(1)[0].to(torch.uint8).numpy()
    elif col == "d":
        exported = tp.OrtModel(model, torch.device("cpu"))
        sess = exported.open()
        notes["onnxruntime"] = exported.version

        def fn(img):
            return sess.run_numpy(tp.numpy_chw(img, conv).astype(np.float32)[None])[0]
    elif col == "f":
        converted = tp.OpenVinoModel(model, torch.device("cpu"))
        compiled = converted.compile((1, 3, -1, -1))
        request = compiled.create_infer_request()
        notes["openvino"] = converted.version
        notes["precision"] = tp.ov_precision(compiled)

        def fn(img):
            x = tp.numpy_chw(img, conv).astype(np.float32)[None]
            return np.array(request.infer({0: x})[compiled.outputs[0]])[0]
    elif col == "e":
        seg = fcnfast.Segmenter(model, device="cpu", dtype=tp.engine_dtype(torch.device("cpu")))
        notes["dtype"] = str(seg.dtype).replace("torch.", "")

        def fn(img):
            return seg.segment(img)
    else:
        raise ValueError(col)
    return time.perf_counter() - t0, fn, notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=sorted(ARCHS), default=["fcn8s", "fcn_resnet50"])
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--min", type=int, default=200)
    p.add_argument("--max", type=int, default=500)
    p.add_argument("--columns", default="abcdfe")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--float32", action="store_true",
                   help="every column in float32, as on a CPU without native bf16 (throughput.py's)")
    p.add_argument(AS_AVX2, dest="as_avx2", action="store_true",
                   help="every library picks its kernels as on an AVX2-only CPU (throughput.py's)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    tp.FLOAT32_ONLY = args.float32
    cpu_class = emulated_cpu_class()
    threads = torch.get_num_threads()
    lp_dtype = tp.low_precision_dtype(torch.device("cpu"))
    shapes = sizes(args.images, args.min, args.max)
    frames = [tp.make_frames(1, h, w, seed=i)[0] for i, (h, w) in enumerate(shapes)]
    warm = [tp.make_frames(1, h, w, seed=1000 + i)[0] for i, (h, w) in
            enumerate([(args.max + 7, args.min + 3), (args.min + 5, args.max + 11)])]
    pixels = sum(h * w for h, w in shapes)
    meta = {"date": now(), "git": git_revision(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": threads, "torch": torch.__version__, "images": args.images,
            "size_range": [args.min, args.max], "megapixels": pixels / 1e6,
            "low_precision": str(lp_dtype).replace("torch.", ""), "float32_only": tp.FLOAT32_ONLY,
            "cpu_class_emulated": cpu_class,
            "loadavg_start": load_average(), "malloc": malloc_setting()}
    print(f"fcnfast mixed-size folder on {meta['cpu']} ({meta['cores']} cores, {threads} threads), "
          f"{args.images} images {args.min}..{args.max} px a side ({meta['megapixels']:.1f} MP), "
          f"git {meta['git']}, {meta['date']}; {meta['malloc']}")
    if cpu_class:
        print(f"CPU class: {cpu_class}")
    rows = []
    for arch in args.models:
        model = tp.random_model(arch, args.num_classes)
        conv = model.input_convention
        refs = []
        for img in frames:
            with torch.no_grad():
                refs.append(tp.reference_labels(model, tp.pytorch_fcn_input(img[None], conv, "cpu")))
        row = {"model": arch, "columns": {}, **meta}
        print(f"{tp.MODEL_NAMES.get(arch, arch)}")
        fns = {}
        for col in args.columns:
            title = tp.column_title(col, torch.device("cpu")).replace(" (freezing)", ", dynamic=True (freezing)")
            c = row["columns"].setdefault(col, {"title": title})
            try:
                setup_s, fn, notes = column_fns(col, model, conv, lp_dtype)
                t0 = time.perf_counter()
                for img in warm:
                    fn(img)
                c.update(setup_s=setup_s, warmup_s=time.perf_counter() - t0, **notes)
                fns[col] = fn
            except tp.Skip as e:
                c["status"] = f"skipped: {e}"
            except Exception as e:  # noqa: BLE001 - one column failing must not stop the others
                c["status"] = tp.short_error(e)
        # Image by image, every column in turn (the order rotating): this VM's speed drifts by 2×
        # over minutes, so columns timed one whole pass after another are not comparable.
        passes = {col: [] for col in fns}
        labels = {col: [] for col in fns}
        for r in range(args.repeats):
            spent = dict.fromkeys(fns, 0.0)
            for i, img in enumerate(frames):
                order = list(fns)
                order = order[i % len(order):] + order[:i % len(order)]
                for col in order:
                    if col not in spent:
                        continue
                    try:
                        t0 = time.perf_counter()
                        out = fns[col](img)
                        spent[col] += time.perf_counter() - t0
                    except Exception as e:  # noqa: BLE001
                        row["columns"][col]["status"] = tp.short_error(e)
                        del spent[col]
                        continue
                    if r == 0:
                        labels[col].append(out)
            for col, seconds in spent.items():
                passes[col].append(seconds)
        for col in args.columns:
            c = row["columns"][col]
            if col not in passes or not passes[col] or "status" in c:
                print(f"  {col} {c['title']:<52} {c.get('status')}")
                continue
            firm_same = firm_n = 0
            for lab, (ref, firm) in zip(labels[col], refs):
                same = np.asarray(lab).astype(np.int64) == ref[0]
                firm_same += int(same[firm[0]].sum())
                firm_n += int(firm[0].sum())
            seconds = statistics.median(passes[col])
            c.update(status="ok", pass_s=seconds, passes_s=passes[col], images_per_s=args.images / seconds,
                     ms_per_image=1e3 * seconds / args.images, firm_agreement=firm_same / max(1, firm_n))
            notes = {k: c[k] for k in ("onnxruntime", "openvino", "precision", "dtype") if k in c}
            print(f"  {col} {c['title']:<52} {c['images_per_s']:7.3f} images/s {c['ms_per_image']:8.1f} ms/image  "
                  f"firm {100 * c['firm_agreement']:.3f}%  (setup {c['setup_s']:.1f} s, warm-up {c['warmup_s']:.1f} s"
                  + "".join(f", {k} {v}" for k, v in notes.items()) + ")")
            sys.stdout.flush()
        peers = [c for k, c in row["columns"].items() if k != "e" and c.get("status") == "ok"]
        e = row["columns"].get("e", {})
        if peers and e.get("status") == "ok":
            best = max(peers, key=lambda c: c["images_per_s"])
            e["vs_best_peer"] = e["images_per_s"] / best["images_per_s"]
            e["best_peer"] = best["title"]
            print(f"  fcnfast = {e['vs_best_peer']:.2f}× the best peer ({best['title']})")
        row["loadavg_end"] = load_average()
        rows.append(row)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())

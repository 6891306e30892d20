"""Where the CPU engine's time goes, layer by layer, against the machine's own arithmetic peak
(issue 15): is a family slow because of us, or because the CPU cannot go faster?

For every convolution of the engine's network (``fcnfast.Segmenter(model).engine.net``) at one
frame size: its time inside a whole engine run (median over ``--repeats`` runs; border skipping
and everything else as the defaults do), its multiply-accumulates, GMAC/s, and the GMAC/s of a
plain matrix product of the same size (``torch.mm`` of (pixels × Cin·k²) by (Cin·k² × Cout) in the
engine's dtype) timed in the same run: the rate this CPU reaches on that problem with no
convolution around it. A large square GEMM is timed at the start and at the end (the machine's
peak, and whether it moved during the run). With ``--openvino``, OpenVINO's own per-node times
(its profiling counters) for the same model at the same size, summed by node type, and paired
with ours convolution by convolution (by weight shape and output size, in execution order): the
*best of both* — every convolution at the faster of the two runtimes, the rest at the faster —
is the frame no mix of the two runtimes' kernels beats, and OpenVINO's time over it the most
any such mix could be ahead of OpenVINO. Winograd layers count the direct convolution's
multiply-adds (their GMAC/s is the effective rate).

    python benchmarks/layers.py --model fcn_resnet50 --size 300x451 --openvino
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fcnfast  # noqa: E402
from fcnfast.engine.amx import AmxConv2d  # noqa: E402
from fcnfast.engine.layers import PackedConv2d  # noqa: E402
from fcnfast.engine.winograd import WinogradConv2d  # noqa: E402
from fcnfast.models import ARCHS  # noqa: E402

import throughput as tp  # noqa: E402
from timing import cpu_model, git_revision, measure, now  # noqa: E402


class LayerClock:
    """Wraps every PackedConv2d call of a network to record (layer, output shape, MACs, seconds)."""

    def __init__(self, net):
        self.names = {id(m): n for n, m in net.named_modules()}
        self.records = []
        self._saved = {}

    def __enter__(self):
        # WinogradConv2d and AmxConv2d override the calls: their layers are clocked through their own
        # methods
        for cls in (PackedConv2d, WinogradConv2d, AmxConv2d):
            for method in ("forward", "forward_unpadded", "add_relu_"):
                if method in vars(cls):
                    original = vars(cls)[method]
                    self._saved[cls, method] = original
                    setattr(cls, method, self._timed(original, method))
        return self

    def __exit__(self, *exc):
        for (cls, method), original in self._saved.items():
            setattr(cls, method, original)

    def _timed(self, original, method):
        clock = self

        def call(layer, x, *rest):
            if getattr(clock, "_inside", False):  # forward_unpadded → forward: count once
                return original(layer, x, *rest)
            clock._inside = True
            try:
                t0 = time.perf_counter()
                y = original(layer, x, *rest)
                dt = time.perf_counter() - t0
            finally:
                clock._inside = False
            kh, kw = layer.kernel_size
            macs = y.numel() * (layer.in_channels // layer.groups) * kh * kw
            call = ("winograd" if isinstance(layer, WinogradConv2d) else
                    "amx" if isinstance(layer, AmxConv2d) else method)
            clock.records.append((clock.names.get(id(layer), "?"), tuple(x.shape), tuple(y.shape),
                                  layer.in_channels * kh * kw // layer.groups, macs, dt, call,
                                  signature((layer.out_channels, layer.in_channels // layer.groups,
                                             kh, kw), y.shape)))
            return y
        return call


def signature(weight_shape, output_shape) -> tuple:
    """(Cout, Cin per group, kh, kw, out H, out W): what pairs a layer with a peer's."""
    return (*map(int, weight_shape), *map(int, output_shape[2:]))


def gemm_rate(m: int, k: int, n: int, dtype, repeats: int = 5) -> float:
    """GMAC/s of torch.mm (m×k)·(k×n) in ``dtype`` (median of ``repeats`` after one warm-up)."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    t = measure(lambda: torch.mm(a, b), torch.device("cpu"), warmup=1, min_repeats=repeats)
    return m * k * n / t.median_s / 1e9


def openvino_convolutions(compiled) -> list:
    """OpenVINO's convolutions in execution order as (weight shape, output shape) from the
    compiled model's runtime graph, to pair with the profiling counters' (same order)."""
    shapes = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            weight = [d.get_length() for d in op.input(1).get_partial_shape()]
            out = [d.get_length() for d in op.get_output_partial_shape(0)]
            shapes.append((weight, out))
    return shapes


def pair_openvino(layers: list, ov_convs: list) -> int:
    """Gives each of our layers ``ov_ms``: the time of OpenVINO's convolution of the same weight
    and output shape, the i-th of ours with the i-th of its (a block's downsampling and its last
    convolution, which may share a signature, run in different orders but are paired within the
    signature). Returns how many were paired."""
    theirs = collections.defaultdict(list)
    for conv in ov_convs:
        if conv.get("signature"):
            theirs[conv["signature"]].append(conv["ms"])
    used = collections.Counter()
    for layer in layers:
        key = layer["signature"]
        i = used[key]
        if i < len(theirs.get(key, ())):
            layer["ov_ms"] = theirs[key][i]
            used[key] += 1
    return sum(used.values())


def openvino_profile(model, shape, frame) -> dict:
    """OpenVINO's per-node real time (ms) for one inference, summed by node type, and its
    convolutions one by one (execution order, with their signatures: weight shape, output size)."""
    ov_model = tp.OpenVinoModel(model, torch.device("cpu"))
    compiled = ov_model.compile(shape, profile=True)
    request = compiled.create_infer_request()
    x = tp.numpy_chw(frame, model.input_convention).astype(np.float32)[None]
    runs = []
    for _ in range(4):
        t0 = time.perf_counter()
        request.infer({0: x})
        wall = time.perf_counter() - t0
        info = request.get_profiling_info()
        runs.append((wall, info))
    wall, info = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    by_type = collections.Counter()
    convs = []
    for p in info:
        ms = p.real_time.total_seconds() * 1e3
        by_type[p.node_type] += ms
        if p.node_type == "Convolution":
            convs.append({"node": p.node_name, "kernel": p.exec_type, "ms": ms})
    shapes = openvino_convolutions(compiled)
    if len(shapes) == len(convs):
        for conv, (weight, out) in zip(convs, shapes):
            conv["signature"] = signature(weight, out)
    return {"version": ov_model.version, "precision": tp.ov_precision(compiled), "wall_ms": wall * 1e3,
            "by_type_ms": dict(by_type.most_common()), "convolutions": convs}


def best_of_both(layers: list, prof: dict, engine_ms: float, conv_ms: float) -> "dict | None":
    """Each convolution at the faster of ours and OpenVINO's, everything else at the faster of
    the two: the frame no mix of the two runtimes' kernels beats, against OpenVINO's own. Printed
    by layer class; None when the convolutions do not pair one to one."""
    paired = pair_openvino(layers, prof["convolutions"])
    if paired != len(layers) or paired != len(prof["convolutions"]):
        print(f"best of both: {paired} of {len(layers)} convolutions paired with OpenVINO's "
              f"{len(prof['convolutions'])}: not computed")
        return None
    classes = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0])
    for layer in layers:
        cout, cin, kh, kw = layer["signature"][:4]
        kind = "winograd 3x3" if layer["call"] == "winograd" else f"{kh}x{kw}"
        c = classes[kind]
        c[0] += 1
        c[1] += layer["ms"]
        c[2] += layer["ov_ms"]
        c[3] += min(layer["ms"], layer["ov_ms"])
        c[4] += layer["macs"]
    ov_conv = sum(layer["ov_ms"] for layer in layers)
    best_conv = sum(min(layer["ms"], layer["ov_ms"]) for layer in layers)
    rest = min(engine_ms - conv_ms, prof["wall_ms"] - ov_conv)
    best = best_conv + rest
    print(f"{'class':<14} {'n':>3} {'GMAC':>6} {'fcnfast ms':>10} {'OpenVINO ms':>11} {'best ms':>8}")
    for kind, (n, ours, theirs, low, macs) in sorted(classes.items()):
        print(f"{kind:<14} {n:>3} {macs / 1e9:6.1f} {ours:10.1f} {theirs:11.1f} {low:8.1f}")
    print(f"best of both: convolutions {best_conv:.1f} ms + the rest {rest:.1f} = {best:.1f} ms per frame; "
          f"OpenVINO {prof['wall_ms']:.1f} ms is {prof['wall_ms'] / best:.2f}× that, fcnfast "
          f"{engine_ms:.1f} ms {engine_ms / best:.2f}×")
    return {"conv_ms": best_conv, "rest_ms": rest, "frame_ms": best,
            "openvino_over_best": prof["wall_ms"] / best,
            "classes": {k: dict(zip(("n", "fcnfast_ms", "openvino_ms", "best_ms", "macs"), v))
                        for k, v in classes.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(ARCHS), default="fcn_resnet50")
    p.add_argument("--size", default="300x451", help="HxW")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--openvino", action="store_true", help="OpenVINO's per-node times too")
    p.add_argument("--top", type=int, default=25, help="layers printed (slowest first)")
    p.add_argument("--float32", action="store_true",
                   help="the engine in float32, as on a CPU without native bf16 (throughput.py's)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    model = tp.random_model(args.model, args.num_classes)
    tp.FLOAT32_ONLY = args.float32
    seg = fcnfast.Segmenter(model, device="cpu", dtype=tp.engine_dtype(torch.device("cpu")))
    dtype = seg.dtype
    frame = tp.make_frames(1, h, w)[0]
    print(f"fcnfast per-layer profile: {args.model} {h}x{w}, {dtype}, {cpu_model()} "
          f"({os.cpu_count()} cores, {torch.get_num_threads()} threads), git {git_revision()}, {now()}")
    peak_start = gemm_rate(4096, 4096, 4096, dtype, 3)
    for _ in range(3):  # packs weights; border buffers kept from the second run, used from the third
        seg.segment(frame)
    totals, per_run = [], []
    with LayerClock(seg.engine.net) as clock:
        for _ in range(args.repeats):
            clock.records = []
            t0 = time.perf_counter()
            seg.segment(frame)
            totals.append(time.perf_counter() - t0)
            per_run.append(clock.records)
    total = statistics.median(totals)
    # layer i of every run: the median of its times
    layers = []
    for i, rec in enumerate(per_run[0]):
        name, xs, ys, k, macs, _, method, sig = rec
        dt = statistics.median(run[i][5] for run in per_run if len(run) > i)
        layers.append({"layer": name, "input": xs, "output": ys, "k": k, "macs": macs, "ms": dt * 1e3,
                       "call": method, "signature": sig})
    gemm_cache = {}
    for layer in layers:
        n, c, oh, ow = layer["output"]
        key = (n * oh * ow, layer["k"], c)
        if key not in gemm_cache:
            gemm_cache[key] = gemm_rate(*key, dtype)
        layer["gmacs"] = layer["macs"] / (layer["ms"] / 1e3) / 1e9
        layer["gemm_gmacs"] = gemm_cache[key]
        layer["vs_gemm"] = layer["gmacs"] / layer["gemm_gmacs"]
    peak_end = gemm_rate(4096, 4096, 4096, dtype, 3)
    conv_ms = sum(layer["ms"] for layer in layers)
    macs = sum(layer["macs"] for layer in layers)
    gemm_ms = sum(layer["macs"] / layer["gemm_gmacs"] / 1e6 for layer in layers)
    summary = {"model": args.model, "size": [h, w], "dtype": str(dtype).replace("torch.", ""),
               "cpu": cpu_model(), "threads": torch.get_num_threads(), "date": now(),
               "git": git_revision(), "engine_ms": total * 1e3, "conv_ms": conv_ms,
               "conv_gmac": macs / 1e9, "conv_gmacs": macs / conv_ms / 1e6,
               "same_size_gemm_ms": gemm_ms, "gemm_peak_gmacs": [peak_start, peak_end]}
    print(f"engine {total * 1e3:.1f} ms per frame; convolutions {conv_ms:.1f} ms "
          f"({100 * conv_ms / (total * 1e3):.1f}%), {macs / 1e9:.1f} GMAC done = {summary['conv_gmacs']:.0f} GMAC/s")
    print(f"the same products as plain GEMMs: {gemm_ms:.1f} ms "
          f"(convolutions at {gemm_ms / conv_ms:.2f}× the GEMM rate); 4096³ GEMM peak "
          f"{peak_start:.0f} GMAC/s at the start, {peak_end:.0f} at the end")
    print(f"{'layer':<34} {'output':>18} {'K':>6} {'ms':>8} {'GMAC/s':>7} {'GEMM':>6} {'ratio':>6}")
    for layer in sorted(layers, key=lambda r: -r["ms"])[:args.top]:
        print(f"{layer['layer']:<34} {'x'.join(map(str, layer['output'])):>18} {layer['k']:>6} "
              f"{layer['ms']:8.2f} {layer['gmacs']:7.0f} {layer['gemm_gmacs']:6.0f} {layer['vs_gemm']:6.2f}")
    if args.openvino:
        try:
            prof = openvino_profile(model, (1, 3, h, w), frame)
        except tp.Skip as e:
            print(f"OpenVINO: skipped: {e}")
        else:
            summary["openvino"] = prof
            ov_conv = prof["by_type_ms"].get("Convolution", 0.0)
            print(f"OpenVINO {prof['version']} ({prof['precision']}): {prof['wall_ms']:.1f} ms per inference; "
                  f"by node type (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in list(prof["by_type_ms"].items())[:8]))
            print(f"convolutions: OpenVINO {ov_conv:.1f} ms, fcnfast {conv_ms:.1f} ms "
                  f"({len(prof['convolutions'])} and {len(layers)} of them)")
            summary["best_of_both"] = best_of_both(layers, prof, total * 1e3, conv_ms)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({**summary, "layers": layers}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

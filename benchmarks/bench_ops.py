"""The five FCN head ops, every provider, at FCN-8s's real shapes (head-ops.md).

Providers: every backend ``fcnfast.ops.backends()`` lists (``torch`` is the reference; ``triton``,
``cuda``, ``cpp``), plus ``composition``: the PyTorch a user would write without fcnfast
(pytorch-fcn's dense ConvTranspose2d + slice + add / argmax, F.interpolate + argmax, permute/float/
sub/div, palette indexing blend), and for upsample_crop_argmax also ``depthwise``: the best plain
PyTorch for a bilinear layer (ConvTranspose2d with groups=C + slice + argmax). Every provider is
checked against the reference before it is timed; one that fails prints ``error: ...`` in its row
and the run goes on.

Shapes come from the FCN-8s geometry itself (the model and its trunk on the meta device, and its
crop offsets), for each image size and batch, with C = 21 classes:
- upsample_crop_add: upscore2 (4/2, learned 21×21) + fused score_pool4 on pool4 (F = 512), and
  upscore_pool4 (4/2, learned) + fused score_pool3 on pool3 (F = 256);
- upsample_crop_argmax: upscore8 (16/8 bilinear) cropped at 31 to the image, argmax;
- interp_argmax: FCN-ResNet50's 1/8-resolution score map → the image, argmax;
- preprocess: uint8 RGB → Caffe BGR minus the mean, float16 channels-last;
- overlay: alpha 0.5 over a 21-colour palette.

ms: CUDA (triton.testing.do_bench: L2 flushed, median) on a GPU, perf_counter on the CPU (median
after warm-up). GB/s counts only the bytes that must move: the op's inputs (for a fused skip only
the cropped window of the features) and its outputs in the contract's dtypes, never
intermediates — the same byte count for every provider. ``speed-up`` = composition ms / ms;
``vs dw`` = depthwise ms / ms where a depthwise row exists.

    python benchmarks/bench_ops.py                      # GPU if present, else the CPU columns
    python benchmarks/bench_ops.py --quick              # tiny CPU run, seconds (triton only with TRITON_INTERPRET=1)
    python benchmarks/bench_ops.py --json rows.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

import fcnfast
import fcnfast.ops as ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import device_name as _device_name  # noqa: E402  (shared with throughput.py)
from timing import fmt as _fmt  # noqa: E402
from timing import git_revision as _git_revision  # noqa: E402
from timing import short_error as _short  # noqa: E402
from timing import triton_version as _triton_version  # noqa: E402
from fcnfast.models import build_model
from fcnfast.models.init import bilinear_weight
from fcnfast.palette import voc_palette

C = 21
CAFFE_MEAN = (104.00698793, 116.66876762, 122.67891434)  # BGR, 0-255 (fcnfast.convention.CAFFE_BGR)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
# Labels may differ only at near-ties: at most this fraction of pixels.
LABEL_MISMATCH = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
DEFAULT_SIZES = [(500, 500), (720, 1280), (1080, 1920)]


# --- geometry ----------------------------------------------------------------------------------

class Geometry:
    """FCN-8s trunk output sizes and crop offsets, and FCN-ResNet50's score-map size, computed by
    running the real models on the meta device."""

    def __init__(self):
        self.fcn8s = build_model("fcn8s", C).to("meta").eval()
        self.resnet = build_model("fcn_resnet50", C).to("meta").eval()

    @torch.no_grad()
    def heads(self, n: int, h: int, w: int) -> dict:
        x = torch.empty(n, 3, h, w, device="meta")
        pool3, pool4, score_fr = self.fcn8s.trunk(x)
        _, c4 = self.resnet.backbone(x)
        coarse = self.resnet.classifier(c4)
        return {"pool3": tuple(pool3.shape), "pool4": tuple(pool4.shape),
                "score_fr": tuple(score_fr.shape), "offsets": dict(self.fcn8s.crop_offsets),
                "resnet_scores": tuple(coarse.shape)}


def _deconv_size(n_in: int, k: int, s: int) -> int:
    return (n_in - 1) * s + k


# --- cases -------------------------------------------------------------------------------------

@dataclass
class Case:
    op: str  # the op's name in fcnfast.ops
    label: str  # which FCN-8s layer
    image: Tuple[int, int]
    batch: int
    dtype: torch.dtype
    nbytes: int  # bytes that must move
    run: Callable[[str], object]  # backend -> output
    composition: Callable[[], object]
    check: Callable[[object, object], Optional[str]]  # (output, reference) -> error or None
    # More plain-PyTorch providers, by name (timed and checked like the composition).
    baselines: Dict[str, Callable[[], object]] = field(default_factory=dict)


def _size(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _check_close(tol: float):
    def check(y, ref):
        if y.shape != ref.shape:
            return f"shape {tuple(y.shape)} != {tuple(ref.shape)}"
        y64, r64 = y.double(), ref.double()
        if not torch.isfinite(y64).all():
            return "non-finite values"
        err = float((y64 - r64).norm() / r64.norm().clamp_min(1e-30))
        return None if err <= tol else f"relative error {err:.3g} > {tol:g}"
    return check


def _check_labels(max_fraction: float):
    def check(y, ref):
        if y.shape != ref.shape:
            return f"shape {tuple(y.shape)} != {tuple(ref.shape)}"
        frac = float((y.long() != ref.long()).float().mean())
        return None if frac <= max_fraction else f"{frac:.2%} of labels differ"
    return check


def _check_overlay(y, ref):
    if y.shape != ref.shape or y.dtype != ref.dtype:
        return f"{tuple(y.shape)} {y.dtype} != {tuple(ref.shape)} {ref.dtype}"
    diff = (y.int() - ref.int()).abs()
    if int(diff.max()) > 1 or float((diff > 0).float().mean()) > 1e-3:
        return f"max |diff| {int(diff.max())}, {float((diff > 0).float().mean()):.2%} differ"
    return None


def make_cases(geo: Geometry, image, batch, dtype, device) -> List[Case]:
    h_img, w_img = image
    g = geo.heads(batch, h_img, w_img)
    off = g["offsets"]
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dt)

    cases = []

    # upsample_crop_add: two fused stages of the FCN-8s head (learned 4/2 deconvolutions).
    score_fr = rand(*g["score_fr"])
    up2_hw = (_deconv_size(g["score_fr"][2], 4, 2), _deconv_size(g["score_fr"][3], 4, 2))
    fuse4 = rand(batch, C, *up2_hw)  # stands in for upscore2's fused output
    for label, x, feat_shape, skip_off in (
            ("upscore2+score_pool4", score_fr, g["pool4"], off["score_pool4"]),
            ("upscore_pool4+score_pool3", fuse4, g["pool3"], off["score_pool3"])):
        feat = torch.rand(*feat_shape, generator=gen).to(device=device, dtype=dtype)
        weight = rand(C, C, 4, 4, scale=0.3)
        sw, sb = rand(C, feat_shape[1], scale=0.05), rand(C, scale=0.1)
        out_hw = (_deconv_size(x.shape[2], 4, 2), _deconv_size(x.shape[3], 4, 2))
        nbytes = (_size(x) + _size(weight) + _size(sw) + _size(sb)
                  + batch * feat_shape[1] * out_hw[0] * out_hw[1] * feat.element_size()
                  + batch * C * out_hw[0] * out_hw[1] * x.element_size())

        def run(b, x=x, weight=weight, feat=feat, sw=sw, sb=sb, so=skip_off):
            return ops.upsample_crop_add(x, weight, 2, feat, skip_offset=so, skip_weight=sw,
                                         skip_bias=sb, backend=b)

        def comp(x=x, weight=weight, feat=feat, sw=sw, sb=sb, so=skip_off):
            up = F.conv_transpose2d(x, weight, stride=2)  # nn.ConvTranspose2d, dense
            score = F.conv2d(feat, sw[:, :, None, None], sb)  # score_poolN on the whole map
            return up + score[:, :, so:so + up.shape[2], so:so + up.shape[3]]

        cases.append(Case("upsample_crop_add", label, image, batch, dtype, nbytes, run, comp,
                          _check_close(TOLERANCE[dtype])))

    # upsample_crop_argmax: upscore8, 16/8 bilinear, cropped to the image.
    fuse3_hw = (_deconv_size(up2_hw[0], 4, 2), _deconv_size(up2_hw[1], 4, 2))
    fuse3 = rand(batch, C, *fuse3_hw)
    up8 = bilinear_weight(C, C, 16).to(device=device, dtype=dtype)
    o8 = off["upscore8"]
    nbytes = _size(fuse3) + _size(up8) + batch * h_img * w_img  # uint8 labels

    def run_uca(b):
        return ops.upsample_crop_argmax(fuse3, up8, 8, o8, (h_img, w_img), backend=b)

    def comp_uca():
        full = F.conv_transpose2d(fuse3, up8, stride=8)
        return full[:, :, o8:o8 + h_img, o8:o8 + w_img].argmax(1)

    up8_dw = up8[torch.arange(C), torch.arange(C)].unsqueeze(1).contiguous()  # (C, 1, 16, 16)

    def depthwise_uca():  # nn.ConvTranspose2d(C, C, 16, 8, groups=C): upscore8 is diagonal
        full = F.conv_transpose2d(fuse3, up8_dw, stride=8, groups=C)
        return full[:, :, o8:o8 + h_img, o8:o8 + w_img].argmax(1)

    cases.append(Case("upsample_crop_argmax", "upscore8", image, batch, dtype, nbytes, run_uca,
                      comp_uca, _check_labels(LABEL_MISMATCH[dtype]),
                      baselines={"depthwise": depthwise_uca}))

    # interp_argmax: FCN-ResNet50's stride-8 scores → the image.
    coarse = rand(*g["resnet_scores"])
    nbytes = _size(coarse) + batch * h_img * w_img

    def run_ia(b):
        return ops.interp_argmax(coarse, (h_img, w_img), backend=b)

    def comp_ia():
        return F.interpolate(coarse, size=(h_img, w_img), mode="bilinear",
                             align_corners=False).argmax(1)

    cases.append(Case("interp_argmax", "resnet50 1/8", image, batch, dtype, nbytes, run_ia,
                      comp_ia, _check_labels(LABEL_MISMATCH[dtype])))

    # preprocess: Caffe BGR, float16, channels-last.
    frames = torch.randint(0, 256, (batch, h_img, w_img, 3), dtype=torch.uint8,
                           generator=gen).to(device)
    mean = torch.tensor(CAFFE_MEAN, device=device).view(1, 3, 1, 1)
    nbytes = _size(frames) + frames.numel() * 2

    def run_pre(b):
        return ops.preprocess(frames, mean=CAFFE_MEAN, bgr=True, dtype=torch.float16,
                              channels_last=True, backend=b)

    def comp_pre():
        x = frames.permute(0, 3, 1, 2)[:, [2, 1, 0]].float()
        return (x - mean).half().contiguous(memory_format=torch.channels_last)

    cases.append(Case("preprocess", "caffe bgr fp16 nhwc", image, batch, torch.float16, nbytes,
                      run_pre, comp_pre, _check_close(TOLERANCE[torch.float16])))

    # overlay: alpha 0.5 over the VOC palette.
    labels = torch.randint(0, C, (batch, h_img, w_img), generator=gen).to(device, torch.uint8)
    palette = torch.from_numpy(voc_palette(C)).to(device)
    nbytes = 2 * _size(frames) + _size(labels) + _size(palette)

    def run_ov(b):
        return ops.overlay(frames, labels, palette, 0.5, backend=b)

    def comp_ov():
        mixed = frames.float() * 0.5 + palette[labels.long()].float() * 0.5
        return (mixed + 0.5).floor().to(torch.uint8)

    cases.append(Case("overlay", "alpha 0.5", image, batch, torch.uint8, nbytes, run_ov, comp_ov,
                      _check_overlay))

    def run_ov_unchecked(b):  # the engine's labels: in range by construction
        return ops.overlay(frames, labels, palette, 0.5, backend=b, check_labels=False)

    cases.append(Case("overlay", "alpha 0.5, labels unchecked", image, batch, torch.uint8, nbytes,
                      run_ov_unchecked, comp_ov, _check_overlay))
    return cases


# --- timing ------------------------------------------------------------------------------------

def time_ms(fn, device: torch.device, quick: bool) -> float:
    """Median milliseconds per call."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    warmup, min_iters, budget = (1, 3, 0.05) if quick else (2, 5, 1.0)
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_iters or (time.perf_counter() - start < budget and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_case(case: Case, providers: List[str], device, quick: bool) -> List[dict]:
    rows = []
    try:
        ref = case.run("torch")
    except Exception as e:  # the reference itself failed: nothing can be checked
        ref, ref_err = None, _short(e)
    else:
        ref_err = None
    for provider in providers + ["composition"] + list(case.baselines):
        row = {"op": case.op, "layer": case.label, "image": f"{case.image[0]}x{case.image[1]}",
               "batch": case.batch, "dtype": str(case.dtype).replace("torch.", ""),
               "provider": provider, "ms": None, "gbps": None, "speedup": None,
               "speedup_depthwise": None, "status": "ok"}
        rows.append(row)
        if ref_err:
            row["status"] = f"reference {ref_err}"
            continue
        if provider == "composition":
            fn = case.composition
        elif provider in case.baselines:
            fn = case.baselines[provider]
        else:
            fn = lambda p=provider: case.run(p)  # noqa: E731
        try:
            bad = case.check(fn(), ref)
            if bad:
                row["status"] = f"error: wrong result: {bad}"
                continue
            row["ms"] = time_ms(fn, device, quick)
        except Exception as e:
            row["status"] = _short(e)
            continue
        row["gbps"] = case.nbytes / (row["ms"] * 1e-3) / 1e9
    comp = next(r["ms"] for r in rows if r["provider"] == "composition")
    dw = next((r["ms"] for r in rows if r["provider"] == "depthwise"), None)
    for r in rows:
        if r["ms"] and comp:
            r["speedup"] = comp / r["ms"]
        if r["ms"] and dw:
            r["speedup_depthwise"] = dw / r["ms"]
    return rows


# --- reporting ---------------------------------------------------------------------------------

def print_row(r: dict):
    print(f"{r['op']:<21}{r['layer']:<27}{r['image']:>10}{r['batch']:>4} {r['dtype']:<9}"
          f"{r['provider']:<12}{_fmt(r['ms'], '10.3f')}{_fmt(r['gbps'], '9.1f'):>9}"
          f"{_fmt(r['speedup'], '8.2f'):>8}{_fmt(r.get('speedup_depthwise'), '8.2f'):>8}"
          f"  {'' if r['status'] == 'ok' else r['status']}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny CPU run (seconds): 40x48 image, batch 1 and 2")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="score dtype of the upsampling ops (default: float16 on GPU, float32 on CPU)")
    p.add_argument("--size", nargs="+", default=None, help="HxW image sizes (default 500x500 720x1280 1080x1920)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    p.add_argument("--ops", nargs="+", default=None, help="only these ops")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; --quick: 1, tiny ops only wait on a pool)")
    p.add_argument("--json", help="write the rows to this JSON file")
    args = p.parse_args(argv)

    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.size] if args.size else DEFAULT_SIZES
    if args.quick:
        sizes, args.batch, args.device = [(40, 48)], [1, 2], "cpu"
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.float16 if device.type == "cuda" else torch.float32)

    providers, skipped = [], {}
    for b in ops.backends():
        ok, why = ops.availability("preprocess", b, device.type)
        if b == "triton" and device.type == "cpu" and ok and not args.quick:
            ok, why = False, "the Triton interpreter is for --quick only"
        if ok:
            providers.append(b)
        else:
            skipped[b] = why

    meta = {"device": _device_name(device), "torch": torch.__version__, "triton": _triton_version(),
            "fcnfast": fcnfast.__version__, "git": _git_revision(), "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
            "timing": "triton.testing.do_bench median" if device.type == "cuda" else "perf_counter median"}
    print(f"fcnfast head ops on {meta['device']}; torch {meta['torch']}, triton {meta['triton']}, "
          f"git {meta['git']}; providers {', '.join(providers)} + composition"
          + "".join(f"; {b} skipped: {why}" for b, why in skipped.items()))
    print(f"{'op':<21}{'layer':<27}{'image':>10}{'N':>4} {'dtype':<9}{'provider':<12}"
          f"{'ms':>10}{'GB/s':>9}{'speedup':>8}{'vs dw':>8}")
    geo = Geometry()
    rows = []
    for image in sizes:
        for batch in args.batch:
            for case in make_cases(geo, image, batch, dtype, device):
                if args.ops and case.op not in args.ops:
                    continue
                for r in bench_case(case, providers, device, args.quick):
                    r.update(device=meta["device"])
                    rows.append(r)
                    print_row(r)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": [dict(r, **{k: meta[k] for k in ("torch", "triton", "git")})
                                              for r in rows]}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()

"""``fcnfast`` command line: segment images, videos and whole datasets (on Ray), check the engine,
describe, convert and export (ONNX) checkpoints, benchmark, train, run the demo. Every command names its model with ``--model``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from .hub import HubError
from .image_files import image_files

_DTYPES = ("auto", "float32", "float16", "bfloat16")


_CHECKPOINT_EXTS = (".pt", ".pth", ".safetensors", ".caffemodel")


def _model_args(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="checkpoint (.pt/.pth/.safetensors/.caffemodel), a release name "
                             "(fcnfast download --list) or 'default', the built-in model "
                             "(default: default)")
    parser.add_argument("--arch", help="architecture, overriding detection (e.g. fcn8s_atonce)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def _engine_args(parser) -> None:
    from .api import BACKENDS

    _model_args(parser)
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="head-op backend; torch = the reference model (default: auto)")
    parser.add_argument("--dtype", default="auto", choices=_DTYPES,
                        help="compute dtype (default: float16 on GPU, bfloat16/float32 on CPU)")


def _model_name(args, positionals: Optional[list] = None) -> str:
    """--model, or (the old form) a first positional that is a checkpoint file."""
    if args.model is None and positionals:
        first = positionals[0]
        if first.lower().endswith(_CHECKPOINT_EXTS) and os.path.isfile(first):
            print(f"fcnfast: note: naming the model as the first argument is deprecated; use "
                  f"--model {first}", file=sys.stderr)
            positionals.pop(0)
            return first
    return args.model or "default"


def _load_for(args, positionals: Optional[list] = None):
    import torch

    from .api import load

    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    return load(_model_name(args, positionals), device=args.device, arch=args.arch,
                backend=args.backend, dtype=dtype)


def _alpha(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alpha must be a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"--alpha must lie in [0, 1], got {text}")
    return v


def _cmd_info(args):
    from .api import model_path
    from .checkpoint import read_checkpoint
    from .models import ARCHS

    if args.model is not None and args.model_pos is not None:
        raise ValueError("name the model once: as the argument or with --model")
    name = args.model or args.model_pos or "default"
    info = read_checkpoint(model_path(name), arch=args.arch)
    # Files without fcnfast metadata use the architecture's convention.
    conv = info.input_convention or ARCHS[info.arch].input_convention
    print(f"model        {name}")
    print(f"arch         {info.arch}")
    print(f"classes      {info.num_classes}")
    print(f"format       {info.format}")
    if info.class_names:
        print(f"class names  {', '.join(info.class_names)}")
    print(f"input        {conv.channel_order}, scale {conv.scale:g}, mean {conv.mean}, std {conv.std}")
    _print_runtime()
    return 0


def _print_runtime() -> None:
    """What runs here: the head-op backends (and why the others do not), the CPU kernels' ISA
    level, whether the AMX products run (and why not) and the engine's default compute dtype per
    device."""
    import torch

    from . import _ext, ops
    from .engine import compute_dtype

    usable, missing = [], []
    for b in ops.BACKENDS:
        ok, why = ops.availability("preprocess", b)
        (usable if ok else missing).append(b if ok else f"{b}: {why}")
    print(f"backends     {', '.join(usable)}")
    for line in missing:
        print(f"  not here   {line}")
    level = _ext.native_cpu_capability()
    print(f"cpu kernels  {level or 'not built'}")
    amx, why = ops.amx_status()
    print(f"amx matmul   {'yes' if amx else 'no: ' + why}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    dtypes = ", ".join(f"{d} {str(compute_dtype(torch.device(d), None)).replace('torch.', '')}"
                       for d in devices)
    print(f"engine dtype {dtypes}")


def _cmd_check(args):
    positionals = list(args.inputs)
    seg = _load_for(args, positionals)
    if len(positionals) > 1:
        raise ValueError(f"check takes one image, got {len(positionals)}")
    report = seg.check(positionals[0] if positionals else None)
    print(report)
    return 0 if report.ok else 1


def _cmd_segment(args):
    import numpy as np
    from PIL import Image as PILImage

    import torch

    from .contract import round_to_uint8
    from .images import ImageError, read_image
    from .render import add_legend, label_png, overlay_labels

    positionals = list(args.images)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise FileExistsError(f"-o {args.output} is an existing file; give a folder for the outputs")
    args.model = _model_name(args, positionals)  # the deprecated `segment MODEL IMG...` too
    if not positionals:
        raise ValueError("no images given")
    inputs = image_files(positionals, skip=args.output)  # before loading: a typo fails fast
    seg = _load_for(args)
    failed = 0
    for path, rel in inputs:
        try:
            image = read_image(path)  # decoded once, for the labels and the overlay
            result = seg.segment(image.pixels)
        except ImageError as e:
            msg = " ".join(str(e).split())
            print(f"fcnfast: skipped: {msg}" if path in msg else f"fcnfast: skipped {path}: {msg}",
                  file=sys.stderr)
            failed += 1
            continue
        stem = os.path.join(args.output, os.path.splitext(rel)[0])
        os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
        # A multi-head model (SIFT Flow) writes each head's maps: IMG_semantic_labels.png, ...
        heads = result if isinstance(result, dict) else {None: result}
        for head, labels in heads.items():
            labels = labels.numpy()
            names = seg.head_class_names[head] if head else seg.classes
            base = f"{stem}_{head}" if head else stem
            out = f"{base}_labels.png"
            label_png(labels, seg.palette).save(out)
            if args.overlay:
                rgb = image.pixels
                if rgb.dtype != torch.uint8:  # a 16-bit or float image: (3, H, W) in [0, 1]
                    rgb = round_to_uint8(rgb.permute(1, 2, 0) * 255)
                picture = overlay_labels(rgb.numpy(), labels, seg.palette[:max(len(names), 1)],
                                         args.alpha, draw_background=args.draw_background)
                if args.legend:
                    picture = add_legend(picture, names, seg.palette, np.unique(labels))
                PILImage.fromarray(picture).save(f"{base}_overlay.png")
            present = np.unique(labels)
            print(f"{path}: {labels.shape[1]}x{labels.shape[0]} -> {out} "
                  f"({', '.join(names[i] for i in present[:8])}{' ...' if len(present) > 8 else ''})")
    return 1 if failed else 0


def _cmd_video(args):
    from .video import VideoInterrupted, segment_video

    if os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass -y/--overwrite to replace it")
    seg = _load_for(args)
    mode = "labels" if args.labels else "side-by-side" if args.side_by_side else "overlay"
    try:
        summary = segment_video(args.input, args.output, seg, mode=mode, alpha=args.alpha,
                                smooth=args.smooth, smooth_reset=args.smooth_reset,
                                batch_size=args.batch, save_labels=args.save_labels,
                                stats=args.stats, progress=not args.quiet, codec=args.codec,
                                crf=args.crf, preset=args.preset,
                                draw_background=args.draw_background,
                                live=True if args.live else None)
    except VideoInterrupted as e:
        print(f"fcnfast: interrupted: {e.summary}", file=sys.stderr)
        return 130
    print(f"fcnfast video: {summary} [{seg.arch}, {seg.backend} on {seg.device}, "
          f"{str(seg.dtype).replace('torch.', '')}]")
    return 0


def _cmd_segment_dataset(args):
    from .distributed import segment_dataset

    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if not args.quiet:  # Ray's own lines would interleave with the progress bar
        import logging

        logging.getLogger("ray").setLevel(logging.WARNING)
    summary = segment_dataset(
        args.source, args.dest, args.model or "default", batch_size=args.batch or 8,
        concurrency=args.workers, num_gpus_per_worker=args.gpus_per_worker, address=args.address,
        output=args.output, backend=args.backend,
        dtype=None if args.dtype == "auto" else args.dtype, arch=args.arch,
        progress=not args.quiet)
    print(f"fcnfast segment-dataset: {summary['written']} written, {summary['skipped']} skipped "
          f"(already done), {summary['failed']} failed in {summary['seconds']:.1f} s "
          f"({summary['images_per_s']:.2f} images/s) -> {args.dest}")
    if summary["failed"]:
        print(f"fcnfast: {summary['failed']} images could not be read: see "
              f"{os.path.join(args.dest, 'errors.jsonl')}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _cmd_export(args):
    import torch

    from .export import export_onnx

    if os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    size = _hw(args.static) if args.static else None
    model = args.model
    if args.arch:
        from .api import load

        model = load(args.model, device="cpu", backend="torch", arch=args.arch)
    result = export_onnx(model, args.output, input=args.input, output=args.outputs,
                         dynamic=size is None, dtype=getattr(torch, args.dtype), opset=args.opset,
                         size=size, batch_size=args.batch, verify=not args.no_verify)
    print(f"fcnfast export: {result}")
    return 0


def _cmd_convert(args):
    from .api import load, save

    out = args.output
    if not out.lower().endswith((".safetensors", ".pt")):
        raise ValueError(f"{out}: the output must end in .safetensors (fcnfast's native format) or "
                         ".pt (a state dict)")
    if os.path.exists(out) and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    seg = load(args.input, device="cpu", backend="torch", arch=args.arch)
    if args.prototxt:  # the release's own text net: its kernels, strides, crops and scales
        from .caffe import CaffeError, check_geometry, parse_prototxt

        with open(args.prototxt, encoding="utf-8") as f:
            text = f.read()
        try:
            check_geometry(seg.model, parse_prototxt(text, args.prototxt), args.prototxt)
        except CaffeError as e:
            raise ValueError(str(e)) from None
    note = ""
    if out.lower().endswith(".pt"):
        import torch

        torch.save(seg.model.state_dict(), out)
        note = " (a state dict: weights only, no class names, palette or input convention"
        note += f"; load it with arch={seg.arch!r})" if seg.arch == "fcn8s_atonce" else ")"
    else:
        save(seg, out)
    names = f" ({', '.join(seg.classes[:8])}{', ...' if seg.num_classes > 8 else ''})"
    print(f"{args.input} -> {out}: {seg.arch}, {seg.num_classes} classes{names}{note}")
    return 0


def _cmd_download(args):
    from . import hub
    from .models import ARCHS

    if args.list:
        if args.name:
            raise ValueError("download --list takes no model name")
        rows = [("name", "arch", "classes", "mean IU", "source")]
        rows += [(r.name, r.arch + ("" if r.arch in ARCHS else "*"), str(r.num_classes),
                  "-" if r.mean_iu is None else f"{r.mean_iu:.1f}", r.source)
                 for r in hub.releases()]
        w = [max(len(row[k]) for row in rows) for k in range(4)]
        for name, arch, classes, miu, source in rows:
            print(f"{name:<{w[0]}}  {arch:<{w[1]}}  {classes:>{w[2]}}  {miu:>{w[3]}}  {source}")
        if any(r.arch not in ARCHS for r in hub.releases()):
            print("* not supported by this build of fcnfast yet")
        print(f"mean IU: the paper's (- where it gives none); cache: {hub.home()}")
        return 0
    if not args.name:
        raise ValueError("name a model to download (fcnfast download --list shows them)")
    print(hub.fetch(args.name, force=args.force, progress=not args.quiet))
    return 0


def _cmd_bench(args):
    from .bench import quick_table

    h, w = _hw(args.size)
    print(quick_table(_model_name(args), size=(h, w), batch=args.batch, device=args.device,
                      repeats=args.repeats, arch=args.arch))
    return 0


def _hw(text: str):
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise ValueError(f"--size must be HxW (e.g. 480x640), got {text!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"--size must be positive, got {text!r}")
    return h, w


def _cmd_eval(args):
    import json

    from .evaluation import EVAL_DATASETS, evaluate_dataset, open_eval_dataset

    if args.model is not None and args.model_pos is not None:
        raise ValueError("name the model once: as the argument or with --model")
    if args.data is None:
        raise ValueError(f"name the dataset with --data ({', '.join(EVAL_DATASETS)})")
    for flag, value in (("--limit", args.limit), ("--batch", args.batch)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise FileNotFoundError(f"--json {args.json}: its folder does not exist")
    where = dict(sbd_root=args.sbd_root, modality=args.modality)
    open_eval_dataset(args.data, args.root, args.split, **where)  # a bad root fails before loading
    args.model = args.model or args.model_pos or "default"
    seg = _load_for(args)
    dataset = open_eval_dataset(args.data, args.root, args.split, segmenter=seg, **where)
    result = evaluate_dataset(seg, dataset, limit=args.limit, progress=not args.quiet,
                              batch_size=args.batch)
    result.model, result.dataset, result.split = args.model, args.data, result.split or args.split
    print(f"fcnfast eval: {args.model} on {args.data}"
          f"{' ' + result.split if result.split else ''}: {result.count} images in "
          f"{result.seconds:.1f} s ({result.images_per_s:.2f} images/s) [{seg.arch}, "
          f"{seg.backend} on {seg.device}, {str(seg.dtype).replace('torch.', '')}]")
    print(result.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
            f.write("\n")
    return 0


def _cmd_train(args):
    from .training import FINAL_WEIGHTS, TrainConfig, train
    from .training.dataset_names import open_dataset

    common = dict(synthetic_count=args.synthetic_count, synthetic_size=args.synthetic_size,
                  seed=args.seed)
    train_set = open_dataset(args.data, args.root, args.split, **common)
    val_set = None
    if not args.no_val:
        val_common = dict(common, synthetic_count=args.val_count)
        val_set = open_dataset(args.data, args.val_root or args.root, args.val_split, val=True,
                               **val_common)
    config = TrainConfig(
        iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, lr_policy=args.lr_policy,
        normalize_loss=not args.unnormalized, loss_sample_drop=args.loss_drop,
        upsampling=args.upsampling, flip=args.flip, scale_jitter=args.scale_jitter,
        crop_size=args.crop, val_every=args.val_every, val_limit=args.val_limit,
        checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device, amp=args.amp,
        num_workers=args.workers, class_weights=args.class_weights)
    result = train(train_set, args.arch, val_set, staged=not args.single_stage,
                   num_classes=args.num_classes, init=args.init, config=config,
                   stage_iterations=args.stage_iterations, widths=args.widths,
                   fc_width=args.fc_width, out_dir=args.output, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    for r in result.stages:
        miu = "n/a" if r.mean_iu is None else f"{100 * r.mean_iu:.1f}"
        where = f" -> {os.path.join(r.out_dir, FINAL_WEIGHTS)}" if r.out_dir else ""
        print(f"{r.arch}: {r.iterations} iterations, mean IU {miu}{where}")
    return 0


def _demo_mosaic(images, truth, labels, palette, class_names, arch, alpha=0.5):
    """Scenes side by side: the prediction over the image on top, the truth over it below, each
    row captioned, and a class legend under them."""
    import numpy as np

    from .render import add_caption, add_legend, overlay_labels

    n = len(class_names)
    truth = np.where(truth < n, truth, 0).astype(np.uint8)  # ignore pixels shown as class 0
    rows = [add_caption(np.concatenate(list(overlay_labels(images, lab, palette[:n], alpha,
                                                           draw_background=True)), axis=1), text)
            for lab, text in ((labels, f"prediction ({arch})"), (truth, "truth"))]
    return add_legend(np.concatenate(rows, axis=0), class_names, palette)


def _cmd_demo(args):
    import time

    import numpy as np
    from PIL import Image

    from .api import load
    from .data.synthetic import synthetic_scene
    from .metrics import ConfusionMeter

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    seg = load(_model_name(args), device=args.device, arch=args.arch)
    rng = np.random.default_rng(args.seed)
    h, w = args.size
    scenes = [synthetic_scene(rng, h, w) for _ in range(args.count)]
    images = np.stack([im for im, _ in scenes])
    truth = np.stack([lab for _, lab in scenes])
    seg.segment_batch(images[:1])  # warm-up: first-call costs are not frame rate
    start = time.perf_counter()
    labels = seg.segment_batch(images, batch_size=args.count)
    fps = args.count / (time.perf_counter() - start)
    meter = ConfusionMeter(seg.num_classes)
    meter.update(truth, labels)
    mean_iu = meter.scores()["mean_iu"]
    out = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    Image.fromarray(_demo_mosaic(images, truth, labels, seg.palette, seg.classes, seg.arch)).save(out)
    ops = sorted(set(getattr(seg, "op_backends", {}).values()))
    backend = seg.backend + (f" (head ops: {', '.join(ops)})" if ops else "")
    print(f"fcnfast demo: {seg.arch} on {args.count} scenes {h}x{w}: mean IU {100 * mean_iu:.1f}% "
          f"vs generated truth, {fps:.1f} frames/s, backend {backend} on {seg.device} -> {out}")
    return 0


def _add_train_parser(sub):
    from .models import ARCHS
    from .training.dataset_names import DATASETS

    t = sub.add_parser("train", help="train an FCN (staged 32s -> 16s -> 8s, or at-once)",
                       description="Train an FCN with the paper's recipe (SGD momentum 0.99, "
                       "batch 1, normalised loss at lr 1e-4, weight decay 5e-4, bias lr x2). "
                       "Under torchrun it trains data-parallel.")
    t.add_argument("--arch", default="fcn8s", choices=list(ARCHS),
                   help="net to end with; fcn16s/fcn8s train the 32s stage(s) first")
    t.add_argument("--single-stage", action="store_true",
                   help="train --arch directly instead of staging up to it")
    t.add_argument("--data", default="synthetic", choices=DATASETS)
    t.add_argument("--root", help="dataset folder (all but synthetic)")
    t.add_argument("--split", help="training split (default: the paper's for the dataset)")
    t.add_argument("--val-root", help="validation dataset folder (default: --root)")
    t.add_argument("--val-split", help="validation split (default: the paper's)")
    t.add_argument("--no-val", action="store_true", help="skip validation")
    t.add_argument("--synthetic-count", type=int, default=200, help="synthetic training scenes")
    t.add_argument("--val-count", type=int, default=20, help="synthetic held-out scenes")
    t.add_argument("--synthetic-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    t.add_argument("--init", help="first stage's start: a VGG16/AlexNet classifier state dict "
                   "(convolutionalised), a trained FCN (e.g. the previous stage), or 'scratch'")
    t.add_argument("--num-classes", type=int,
                   help="class count (default: the dataset's); a trained --init keeps its trunk")
    t.add_argument("--widths", type=int, nargs=5, metavar="W", help="narrow VGG block widths")
    t.add_argument("--fc-width", type=int, help="narrow VGG fc6/fc7 width")
    t.add_argument("--iterations", type=int, default=1000, help="iterations per stage")
    t.add_argument("--stage-iterations", type=int, nargs="+", help="iterations of each stage")
    t.add_argument("--lr", type=float, help="default 1e-4 (normalised loss) / 1e-10 (summed)")
    t.add_argument("--momentum", type=float, default=0.99)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--lr-policy", choices=("fixed", "poly"), default="fixed")
    t.add_argument("--batch-size", type=int, default=1)
    t.add_argument("--unnormalized", action="store_true",
                   help="summed pixel loss (the released nets; pair with --lr 1e-10)")
    t.add_argument("--loss-drop", type=float, default=0.0,
                   help="fraction of pixel losses dropped at random (patchwise training)")
    t.add_argument("--class-weights", type=float, nargs="+", help="loss weight of each class")
    t.add_argument("--upsampling", choices=("fixed", "learn_2x", "learn"), default="fixed",
                   help="deconvolutions: fixed bilinear, learn the 2x ones, or learn all")
    t.add_argument("--flip", action="store_true", help="random horizontal flips")
    t.add_argument("--scale-jitter", type=float, nargs=2, metavar=("LOW", "HIGH"))
    t.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="random crops")
    t.add_argument("--val-every", type=int, default=0, help="validate every N iterations")
    t.add_argument("--val-limit", type=int, help="validate on the first N samples")
    t.add_argument("--checkpoint-every", type=int, default=0)
    t.add_argument("-o", "--output", default="fcnfast_train", help="output folder")
    t.add_argument("--resume", action="store_true",
                   help="continue from the output folder's checkpoints")
    t.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (GPU)")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--workers", type=int, default=0, help="data loader processes")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(fn=_cmd_train)


def main(argv=None) -> int:
    from . import __version__

    p = argparse.ArgumentParser(prog="fcnfast", description="Fast FCN semantic segmentation")
    p.add_argument("--version", action="version", version=f"fcnfast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment images (files, folders, globs) into label PNGs",
                       epilog="Folders are read recursively (every file Pillow can open); "
                              "outputs mirror the inputs' paths relative to their common folder "
                              "under -o (IMG_labels.png, IMG_overlay.png). Exit status: 0 all "
                              "done; 1 some image could not be read (each reported on stderr "
                              "and skipped, the others written); 2 an error (bad option, model, "
                              "-o an existing file, no images found).")
    s.add_argument("images", nargs="+", help="image files, folders (recursive) or globs")
    s.add_argument("-o", "--output", default="fcnfast_out", help="output folder")
    s.add_argument("--overlay", action="store_true", help="also write the labels blended over the image")
    s.add_argument("--alpha", type=_alpha, default=0.5, help="overlay opacity in [0, 1]")
    s.add_argument("--draw-background", action="store_true",
                   help="blend the background class too (default: left undrawn)")
    s.add_argument("--legend", action="store_true", help="add a class legend to the overlay")
    _engine_args(s)
    s.set_defaults(fn=_cmd_segment)

    v = sub.add_parser("video", help="segment a video file, stream or camera into a video",
                       description="Decode, segment, overlay and encode in one pipeline. The "
                       "output keeps the input's frames, size, rate, timestamps and audio. Ctrl-C "
                       "finishes the file with the frames done so far (exit status 130).")
    v.add_argument("input", help="video file, URL (rtsp://, http(s)://...) or camera (/dev/video0)")
    v.add_argument("output", help="output video (.mp4, .mkv, .mov, .avi, .webm, .ts)")
    m = v.add_mutually_exclusive_group()
    m.add_argument("--overlay", action="store_true", help="labels blended over the frame (default)")
    m.add_argument("--labels", action="store_true", help="the label map in palette colours")
    m.add_argument("--side-by-side", action="store_true", help="frame | overlay")
    v.add_argument("--alpha", type=_alpha, default=0.5, help="overlay opacity in [0, 1]")
    v.add_argument("--draw-background", action="store_true",
                   help="blend the background class too (default: left undrawn)")
    v.add_argument("--smooth", type=float, help="temporal smoothing of the class scores: the "
                   "weight of the past in [0, 1) (e.g. 0.5)")
    v.add_argument("--smooth-reset", type=float, default=0.3,
                   help="scene-cut threshold restarting the smoothing (mean absolute frame "
                        "difference, 0-1; default 0.3)")
    v.add_argument("--save-labels", metavar="DIR", help="also write a label PNG per frame")
    v.add_argument("--stats", metavar="CSV", help="per-frame class pixel fractions")
    v.add_argument("--batch", type=int, help="frames per engine batch (default 2 CPU, 8 GPU, 1 live)")
    v.add_argument("--codec", help="FFmpeg encoder (default libx264; h264_nvenc on a GPU where it opens)")
    v.add_argument("--crf", type=int, help="encoder quality (libx264: 0 lossless .. 51; default 23)")
    v.add_argument("--preset", help="encoder speed preset (libx264 default: veryfast)")
    v.add_argument("--live", action="store_true",
                   help="newest-frame policy: drop stale frames (default for rtsp/udp/... and cameras)")
    v.add_argument("-y", "--overwrite", action="store_true", help="replace an existing output")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _engine_args(v)
    v.set_defaults(fn=_cmd_video)

    sd = sub.add_parser("segment-dataset", help="segment a whole dataset on Ray Data (resumable)",
                        description="Segment every image under SRC (recursively) into DEST on Ray "
                        "Data: DEST/<relative path>.png label maps, bad images in "
                        "DEST/errors.jsonl. Rerunning skips what is done and retries the rest. "
                        "Needs pip install 'fcnfast[ray]'.")
    sd.add_argument("source", help="folder of images")
    sd.add_argument("dest", help="output folder (on a cluster: one every node sees)")
    sd.add_argument("--batch", type=int, help="images per batch (default 8)")
    sd.add_argument("--workers", type=int, help="Ray actors (default: one per node; one per GPU)")
    sd.add_argument("--gpus-per-worker", type=float,
                    help="GPUs per actor (default: 1 where the cluster has GPUs, else 0)")
    sd.add_argument("--address", help="join this Ray cluster (default: a local one)")
    sd.add_argument("--output", default="png", choices=("png", "parquet", "png+parquet"),
                    help="label PNGs, per-image class fractions in DEST/classes/*.parquet, or both")
    sd.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _engine_args(sd)
    sd.set_defaults(fn=_cmd_segment_dataset)

    ex = sub.add_parser("export", help="write a model as an ONNX file (dynamic N, H, W)",
                        description="Export to ONNX with PyTorch's torch.export-based exporter: "
                        "uint8 RGB frames in (preprocessing inside), labels out, any batch and "
                        "size; then checked against the reference with onnxruntime where "
                        "installed. Needs pip install 'fcnfast[onnx]'.")
    ex.add_argument("model", help="checkpoint, release name or 'default'")
    ex.add_argument("output", help="OUT.onnx")
    ex.add_argument("--input", default="uint8", choices=("uint8", "float"),
                    help="uint8: (N, H, W, 3) RGB frames 'frames' (default); float: the "
                    "preprocessed (N, 3, H, W) tensor 'x'")
    ex.add_argument("--output", dest="outputs", default="labels", choices=("labels", "scores"),
                    help="labels: (N, H, W) class ids (default); scores: (N, C, H, W)")
    ex.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                    help="float16 for GPU runtimes (TensorRT, onnxruntime-gpu)")
    ex.add_argument("--static", metavar="HxW", help="fix the input size (default: dynamic)")
    ex.add_argument("--batch", type=int, default=1, help="with --static: the fixed batch size")
    ex.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    ex.add_argument("--arch", help="architecture, overriding detection (e.g. fcn8s_atonce)")
    ex.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing file")
    ex.set_defaults(fn=_cmd_export)

    c = sub.add_parser("check", help="compare the engine with the float32 reference on an image")
    c.add_argument("inputs", nargs="*", metavar="image", help="image file (default: a generated scene)")
    _engine_args(c)
    c.set_defaults(fn=_cmd_check)

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("model_pos", nargs="?", metavar="model", help="checkpoint or 'default'")
    _model_args(i)
    i.set_defaults(fn=_cmd_info)

    cv = sub.add_parser("convert", help="write any readable checkpoint in fcnfast's native format")
    cv.add_argument("input", help="checkpoint (or 'default')")
    cv.add_argument("output", help="OUT.safetensors (native: weights + arch, classes, input "
                    "convention) or OUT.pt (a state dict)")
    cv.add_argument("--arch", help="architecture, overriding detection")
    cv.add_argument("--prototxt", help="the release's deploy/train .prototxt: check that its "
                    "kernels, strides, crops and scales are the model's before converting")
    cv.add_argument("--overwrite", action="store_true")
    cv.set_defaults(fn=_cmd_convert)

    dl = sub.add_parser("download", help="fetch a released model by name into the cache",
                        description="Download a known release (the official Caffe nets, "
                        "torchvision's FCN-ResNets), verify it, convert it to the native format "
                        "once and print where it is. Cache: $FCNFAST_HOME (default "
                        "~/.cache/fcnfast); FCNFAST_HUB_MIRROR=URL fetches from a mirror.")
    dl.add_argument("name", nargs="?", help="release name (see --list), e.g. voc-fcn8s")
    dl.add_argument("--list", action="store_true", help="list the known releases")
    dl.add_argument("--force", action="store_true", help="download and convert again")
    dl.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(fn=_cmd_download)

    b = sub.add_parser("bench", help="frames/s of the engine against the float32 reference")
    _model_args(b)
    b.add_argument("--size", default="480x640", help="frame size HxW (default 480x640)")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--repeats", type=int, default=5)
    b.set_defaults(fn=_cmd_bench)

    e = sub.add_parser("eval", help="score.py's metrics of a model over a dataset",
                       description="Pixel accuracy, mean accuracy, mean IU, frequency-weighted IU "
                       "and per-class IU, as the paper's score.py computes them, over a dataset's "
                       "split (default: the paper's; VOC: seg11valid). Two-head SIFT Flow nets "
                       "are scored on both heads (semantic and geometric).")
    e.add_argument("model_pos", nargs="?", metavar="model",
                   help="checkpoint, release name (e.g. voc-fcn8s) or 'default'")
    e.add_argument("--data", metavar="NAME",
                   help="voc, sbd, siftflow, nyud, folder (ROOT/images + ROOT/labels) or synthetic")
    e.add_argument("--root", help="dataset folder (all but synthetic)")
    e.add_argument("--split", help="split to score (default: the paper's: voc seg11valid, sbd "
                   "val, siftflow and nyud test)")
    e.add_argument("--sbd-root", help="voc: SBD folder, to compute seg11valid (VOC val minus SBD "
                   "train) when ImageSets/Segmentation/seg11valid.txt is absent")
    e.add_argument("--modality", choices=("rgb", "hha", "rgbhha"),
                   help="nyud: the input images (default: rgbhha for a color-HHA net, else rgb)")
    e.add_argument("--limit", type=int, help="score the first N images only")
    e.add_argument("--batch", type=int, default=1,
                   help="consecutive images of one size per batch (default 1)")
    e.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _engine_args(e)
    e.set_defaults(fn=_cmd_eval)

    _add_train_parser(sub)

    d = sub.add_parser("demo", help="segment generated scenes with the built-in model")
    d.add_argument("-o", "--output", default="fcnfast_demo.png", help="overlay picture to write")
    d.add_argument("--count", type=int, default=4, help="number of scenes")
    d.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    d.add_argument("--seed", type=int, default=2026)
    _model_args(d)
    d.set_defaults(fn=_cmd_demo)

    args = p.parse_args(argv)
    return _run(args.fn, args)


# What a command raises for a bad input or environment: a one-line error, never a traceback.
# ValueError covers CheckpointError and ImageError; OSError covers FileNotFoundError,
# FileExistsError, IsADirectoryError and PermissionError; ImportError is a broken install;
# HubError (a RuntimeError) a release that cannot be fetched.
_EXPECTED_ERRORS = (ValueError, OSError, RuntimeError, TypeError, ImportError, HubError)


def _error_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _run(fn, args) -> int:
    """Run a command: its exit status; expected errors as ``fcnfast: error: ...`` (exit 2),
    Ctrl-C as ``fcnfast: interrupted`` (exit 130)."""
    try:
        return fn(args)
    except BrokenPipeError:
        # The reader went away (`fcnfast info | head`): as Unix tools do, stop quietly. Python
        # would report the pipe again when flushing stdout at exit, so point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("fcnfast: interrupted", file=sys.stderr)
        return 130
    except _EXPECTED_ERRORS as e:
        print(f"fcnfast: error: {_error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

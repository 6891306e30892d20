"""``fcnfast`` command line: segment images, check the engine, describe a checkpoint, train, run the
demo."""
from __future__ import annotations

import argparse
import os
import sys


def _cmd_info(args):
    from .checkpoint import read_checkpoint
    from .models import ARCHS

    info = read_checkpoint(args.model, arch=args.arch)
    # Files without fcnfast metadata use the architecture's convention.
    conv = info.input_convention or ARCHS[info.arch].input_convention
    print(f"arch         {info.arch}")
    print(f"classes      {info.num_classes}")
    print(f"format       {info.format}")
    if info.class_names:
        print(f"class names  {', '.join(info.class_names)}")
    print(f"input        {conv.channel_order}, scale {conv.scale:g}, mean {conv.mean}, std {conv.std}")
    return 0


_DTYPES = ("auto", "float32", "float16", "bfloat16")


def _engine_args(parser) -> None:
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "triton", "cuda", "cpp"),
                        help="head-op backend; torch = the reference model (default: auto)")
    parser.add_argument("--dtype", default="auto", choices=_DTYPES,
                        help="compute dtype (default: float16 on GPU, bfloat16/float32 on CPU)")


def _load_for(args):
    import torch

    from .api import load

    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    return load(args.model, device=args.device, arch=args.arch, backend=args.backend, dtype=dtype)


def _cmd_check(args):
    seg = _load_for(args)
    report = seg.check(args.image)
    print(report)
    return 0 if report.ok else 1


def _cmd_segment(args):
    import numpy as np
    from PIL import Image

    seg = _load_for(args)
    os.makedirs(args.output, exist_ok=True)
    for path in args.images:
        labels = seg.segment(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        out = os.path.join(args.output, f"{stem}_labels.png")
        if labels.dtype == np.uint8:
            im = Image.fromarray(labels, mode="P")
            im.putpalette(seg.palette[:256].reshape(-1).tolist())
        else:  # more than 256 classes: 32-bit label image
            im = Image.fromarray(labels.astype(np.int32), mode="I")
        im.save(out)
        if args.overlay:
            rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
            mixed = (1 - args.alpha) * rgb + args.alpha * seg.colorize(labels).astype(np.float32)
            Image.fromarray(mixed.round().astype(np.uint8)).save(
                os.path.join(args.output, f"{stem}_overlay.png"))
        present = np.unique(labels)
        print(f"{path}: {labels.shape[1]}x{labels.shape[0]} -> {out} "
              f"({', '.join(seg.classes[i] for i in present[:8])}{' ...' if len(present) > 8 else ''})")
    return 0


def _cmd_train(args):
    from .training import TrainConfig, train
    from .training.datasets import open_dataset

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
        where = f" -> {os.path.join(r.out_dir, 'model.safetensors')}" if r.out_dir else ""
        print(f"{r.arch}: {r.iterations} iterations, mean IU {miu}{where}")
    return 0


def _demo_mosaic(images, truth, labels, palette, alpha=0.5):
    """Scenes side by side: the prediction over the image on top, the truth over it below."""
    import numpy as np
    import torch

    from .ops import overlay

    frames = torch.from_numpy(images)
    pal = torch.from_numpy(np.ascontiguousarray(palette, dtype=np.uint8))
    n = len(pal)
    truth = np.where(truth < n, truth, 0).astype(np.uint8)  # ignore pixels shown as class 0
    rows = [overlay(frames, torch.from_numpy(lab), pal, alpha=alpha).numpy()
            for lab in (labels, truth)]
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def _cmd_demo(args):
    import time

    import numpy as np
    from PIL import Image

    from .api import load
    from .data.synthetic import synthetic_scene
    from .metrics import ConfusionMeter

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    seg = load(args.model or "default", device=args.device)
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
    Image.fromarray(_demo_mosaic(images, truth, labels, seg.palette)).save(out)
    ops = sorted(set(getattr(seg, "op_backends", {}).values()))
    backend = seg.backend + (f" (head ops: {', '.join(ops)})" if ops else "")
    print(f"fcnfast demo: {seg.arch} on {args.count} scenes {h}x{w}: mean IU {100 * mean_iu:.1f}% "
          f"vs generated truth, {fps:.1f} frames/s, backend {backend} on {seg.device} -> {out}")
    return 0


def _add_train_parser(sub):
    from .models import ARCHS
    from .training.datasets import DATASETS

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
    p = argparse.ArgumentParser(prog="fcnfast", description="Fast FCN semantic segmentation")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment image files, writing palette label PNGs")
    s.add_argument("model", help="checkpoint (.pt/.pth/.safetensors)")
    s.add_argument("images", nargs="+")
    s.add_argument("-o", "--output", default="fcnfast_out", help="output folder")
    s.add_argument("--arch", help="architecture, overriding detection (e.g. fcn8s_atonce)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.add_argument("--overlay", action="store_true", help="also write the labels blended over the image")
    s.add_argument("--alpha", type=float, default=0.5)
    _engine_args(s)
    s.set_defaults(fn=_cmd_segment)

    c = sub.add_parser("check", help="compare the engine with the float32 reference on an image")
    c.add_argument("model", help="checkpoint, or 'default' for the built-in model")
    c.add_argument("image", nargs="?", help="image file (default: a generated scene)")
    c.add_argument("--arch")
    c.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _engine_args(c)
    c.set_defaults(fn=_cmd_check)

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("model")
    i.add_argument("--arch")
    i.set_defaults(fn=_cmd_info)

    _add_train_parser(sub)

    d = sub.add_parser("demo", help="segment generated scenes with the built-in model")
    d.add_argument("-o", "--output", default="fcnfast_demo.png", help="overlay picture to write")
    d.add_argument("--count", type=int, default=4, help="number of scenes")
    d.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    d.add_argument("--seed", type=int, default=2026)
    d.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    d.add_argument("--model", help="another checkpoint instead of the built-in one (\"default\")")
    d.set_defaults(fn=_cmd_demo)

    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as e:
        print(f"fcnfast: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

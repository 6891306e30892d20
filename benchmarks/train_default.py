"""Train fcnfast's built-in default model: a narrow FCN-8s, staged 32s -> 16s -> 8s, on synthetic scenes.

Reproducible: every random choice comes from --seed (scenes, init, data order, augmentation,
dropout). Each stage starts from the previous one, as in the paper; each is scored on held-out
scenes (a seed the training set never uses) and the three mean IUs go to
benchmarks/data/train_default.json. The final FCN-8s is written, with class names and a palette, to
fcnfast/weights/default.safetensors (``fcnfast.load("default")``).

    nice -n 10 python benchmarks/train_default.py            # the shipped model (~15 min, 2 cores)
    python benchmarks/train_default.py --quick --out /tmp/d.safetensors --json /tmp/d.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fcnfast import checkpoint  # noqa: E402
from fcnfast.data.synthetic import SYNTHETIC_CLASSES, SyntheticScenes  # noqa: E402
from fcnfast.palette import voc_palette  # noqa: E402
from fcnfast.training import TrainConfig, evaluate, train_staged  # noqa: E402
from timing import cpu_model  # noqa: E402  (benchmarks/timing.py)

STAGES = ("fcn32s", "fcn16s", "fcn8s")


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "fcnfast", "weights", "default.safetensors"))
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "data", "train_default.json"))
    p.add_argument("--work", default=os.path.join("/tmp", "fcnfast_train_default"),
                   help="stage folders (logs, checkpoints)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="held-out scene side in pixels")
    p.add_argument("--train-size", type=int, nargs=2, default=(96, 160), metavar=("MIN", "MAX"),
                   help="training scene sides (random per scene)")
    p.add_argument("--crop", type=int, default=96, help="training crop side (random crops)")
    p.add_argument("--train-scenes", type=int, default=4000)
    p.add_argument("--val-scenes", type=int, default=64)
    p.add_argument("--monitor-every", type=int, default=200,
                   help="score a few held-out scenes every N iterations (the logs)")
    p.add_argument("--iterations", type=int, nargs=3, default=(800, 400, 400),
                   metavar=("I32", "I16", "I8"), help="iterations of each stage")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--widths", type=int, nargs=5, default=(8, 16, 32, 64, 64))
    p.add_argument("--fc-width", type=int, default=128)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    p.add_argument("--lr", type=float, nargs=3, default=(1e-3, 5e-4, 5e-4),
                   metavar=("LR32", "LR16", "LR8"))
    p.add_argument("--resume", action="store_true", help="reuse finished stages in --work")
    p.add_argument("--quick", action="store_true", help="a few iterations (checks the script)")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.train_scenes, args.val_scenes = (4, 2, 2), 16, 4

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sides = tuple(args.train_size)
    train_set = SyntheticScenes(args.train_scenes, size=(sides, sides), seed=args.seed + 1)
    # Held out: scenes from a seed the training set never draws from.
    held_out = SyntheticScenes(args.val_scenes, size=(args.size, args.size), seed=args.seed + 1000)
    monitor = SyntheticScenes(8, size=(args.size, args.size), seed=args.seed + 2000)
    config = TrainConfig(optimizer=args.optimizer, momentum=0.9, batch_size=args.batch_size,
                         weight_decay=5e-4, flip=True, crop_size=(args.crop, args.crop),
                         lr_policy="poly", seed=args.seed, log_every=25, device="cpu",
                         val_every=args.monitor_every)
    start = time.perf_counter()
    result = train_staged(train_set, monitor, stages=STAGES, num_classes=len(SYNTHETIC_CLASSES),
                          config=config, stage_iterations=list(args.iterations),
                          stage_lrs=list(args.lr), widths=args.widths, fc_width=args.fc_width,
                          out_dir=args.work, resume=args.resume, class_names=SYNTHETIC_CLASSES)
    seconds = time.perf_counter() - start
    # Every stage scored on the same held-out scenes, after training.
    held_out_scores = [evaluate(r.model, held_out, device="cpu") for r in result.stages]

    model = result.model
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    checkpoint.save_native(model, args.out, class_names=list(SYNTHETIC_CLASSES),
                           palette=voc_palette(len(SYNTHETIC_CLASSES)).tolist())
    stages = []
    for r, scores, iters, lr in zip(result.stages, held_out_scores, args.iterations, args.lr):
        stages.append({"arch": r.arch, "iterations": iters, "lr": lr, "seconds": round(r.seconds, 1),
                       **{k: scores.get(k) for k in ("pixel_acc", "mean_acc", "mean_iu", "fwavacc")},
                       "per_class_iu": [None if v != v else float(v)
                                        for v in scores.get("per_class_iu", [])]})
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/train_default.py " + " ".join(argv or sys.argv[1:]),
        "git": _git_rev(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {args.threads} threads",
        "torch": torch.__version__,
        "seed": args.seed,
        "held_out_scene_size": args.size,
        "train_scene_sides": list(args.train_size),
        "train_crop": args.crop,
        "lr_policy": "poly",
        "train_scenes": args.train_scenes,
        "held_out_scenes": args.val_scenes,
        "widths": list(args.widths),
        "fc_width": args.fc_width,
        "parameters": sum(p.numel() for p in model.parameters()),
        "file_bytes": os.path.getsize(args.out),
        "optimizer": args.optimizer,
        "batch_size": args.batch_size,
        "total_seconds": round(seconds, 1),
        "stages": stages,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(record, f, indent=1)
    print(f"{'stage':8} {'iters':>6} {'mean IU':>8} {'pixel acc':>10} {'seconds':>8}")
    for s in stages:
        miu = "n/a" if s["mean_iu"] is None else f"{100 * s['mean_iu']:.1f}"
        acc = "n/a" if s["pixel_acc"] is None else f"{100 * s['pixel_acc']:.1f}"
        print(f"{s['arch']:8} {s['iterations']:>6} {miu:>8} {acc:>10} {s['seconds']:>8}")
    print(f"-> {args.out} ({record['file_bytes'] / 1e6:.2f} MB), {args.json}, {seconds:.0f} s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())

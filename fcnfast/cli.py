"""``fcnfast`` command line: segment images, describe a checkpoint."""
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


def _cmd_segment(args):
    import numpy as np
    from PIL import Image

    from .api import load

    seg = load(args.model, device=args.device, arch=args.arch)
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
    s.set_defaults(fn=_cmd_segment)

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("model")
    i.add_argument("--arch")
    i.set_defaults(fn=_cmd_info)

    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as e:
        print(f"fcnfast: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

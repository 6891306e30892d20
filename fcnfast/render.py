"""Pictures of label maps, shared by the CLI, the demo and ``fcnfast.video``: overlays (through the
``overlay`` head op), palette label PNGs and a class legend."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from . import ops
from .images import numpy_to_tensor


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else numpy_to_tensor(np.asarray(a))


def _restore(out: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> None:
    """out[mask] = frames[mask], pixel by pixel, in place."""
    if out.device.type == "cpu":
        # Whole RGB pixels as 3-byte items: one masked copy, twice as fast as a broadcast where.
        pixel = np.dtype((np.void, 3))
        o = out.numpy().reshape(-1, 3).view(pixel)[:, 0]
        src = frames.contiguous().numpy().reshape(-1, 3).view(pixel)[:, 0]
        np.copyto(o, src, where=mask.numpy().reshape(-1))
    else:
        out.copy_(torch.where(mask.unsqueeze(-1), frames, out))


def overlay_labels(frames, labels, palette, alpha: float = 0.5, *, draw_background: bool = False,
                   background: int = 0, backend: str = "auto", num_classes: Optional[int] = None):
    """uint8 frames (N, H, W, 3) or (H, W, 3) blended with ``palette[labels]`` by the ``overlay`` op.

    The background class (``background``, VOC's 0, drawn black) is left undrawn unless
    ``draw_background``: blending black would halve the brightness of every background pixel.
    ``num_classes``: the labels are a model's argmax over that many classes, so when the palette
    has a colour for each the op skips its label-range check (a pass over the labels and a device
    sync per frame); other labels are checked.
    numpy in → numpy out; torch in → torch out on the frames' device.
    """
    is_torch = isinstance(frames, torch.Tensor)
    f, lab = _as_tensor(frames), _as_tensor(labels)
    single = f.dim() == 3
    if single:
        f, lab = f.unsqueeze(0), lab.unsqueeze(0)
    lab = lab.to(f.device)
    if lab.dtype not in (torch.uint8, torch.int32, torch.int64):
        lab = lab.to(torch.int64)
    pal = _as_tensor(np.asarray(palette, dtype=np.uint8)).to(f.device)
    in_range = num_classes is not None and 1 <= num_classes <= pal.shape[0]
    out = ops.overlay(f.contiguous(), lab.contiguous(), pal, alpha=alpha, backend=backend,
                      check_labels=not in_range)
    if not draw_background:
        _restore(out, f, lab == background)
    if single:
        out = out[0]
    return out if is_torch else out.cpu().numpy()


def label_png(labels: np.ndarray, palette):
    """A PIL image of a label map: 8-bit palette PNG (pixel value = class id, colours attached)
    when the labels fit in uint8, else a 32-bit integer image."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.dtype == np.uint8:
        im = Image.fromarray(labels, mode="P")
        pal = np.zeros((256, 3), np.uint8)
        given = np.asarray(palette, dtype=np.uint8)[:256]
        pal[:len(given)] = given
        im.putpalette(pal.reshape(-1).tolist())
        return im
    return Image.fromarray(labels.astype(np.int32), mode="I")


def class_fractions(labels, num_classes: int) -> np.ndarray:
    """(num_classes,) float64: the fraction of the map's pixels in each class."""
    lab = _as_tensor(labels).reshape(-1).to(torch.int64)
    counts = torch.bincount(lab, minlength=num_classes)[:num_classes].cpu().numpy()
    return counts / max(lab.numel(), 1)


def add_legend(rgb: np.ndarray, class_names: Sequence[str], palette,
               classes: Optional[Sequence[int]] = None) -> np.ndarray:
    """The picture with a legend strip below it: a colour swatch and the name of each class in
    ``classes`` (default: every class)."""
    from PIL import Image, ImageDraw, ImageFont

    rgb = np.asarray(rgb, dtype=np.uint8)
    if classes is None:
        classes = range(len(class_names))
    classes = [int(c) for c in classes]
    pal = np.asarray(palette, dtype=np.uint8)
    font = ImageFont.load_default()
    pad, box, row_h = 4, 10, 14
    entries = [(c, str(class_names[c]) if c < len(class_names) else f"class_{c}") for c in classes]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [box + 3 + int(measure.textlength(name, font=font)) + 2 * pad for _, name in entries]
    width = rgb.shape[1]
    rows, x = 1, 0
    for w in widths:  # wrap entries into rows of the picture's width
        if x and x + w > width:
            rows, x = rows + 1, 0
        x += w
    strip = Image.new("RGB", (width, rows * row_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    x, y = pad, pad // 2
    for (c, name), w in zip(entries, widths):
        if x > pad and x + w > width:
            x, y = pad, y + row_h
        draw.rectangle([x, y + 2, x + box, y + 2 + box], fill=tuple(int(v) for v in pal[c]),
                       outline=(0, 0, 0))
        draw.text((x + box + 3, y), name, fill=(0, 0, 0), font=font)
        x += w
    return np.concatenate([rgb, np.asarray(strip)], axis=0)


def add_caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """The picture with a one-line caption strip above it."""
    from PIL import Image, ImageDraw, ImageFont

    rgb = np.asarray(rgb, dtype=np.uint8)
    strip = Image.new("RGB", (rgb.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, 1), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.concatenate([np.asarray(strip), rgb], axis=0)

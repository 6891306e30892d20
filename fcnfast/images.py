"""Turn what users pass as an image into a tensor, and a tensor back into what they passed.

Accepted: numpy H×W×3 uint8 RGB (also H×W gray, H×W×1, H×W×4 with alpha dropped, uint16, float in
[0, 1]); PIL images of any mode; torch tensors (H×W×C uint8, C×H×W uint8 as
``torchvision.io.read_image`` returns it, or C×H×W float in [0, 1], on any device); paths to image
files, read as they are displayed (EXIF orientation applied; a PIL image is taken as it is), with
Pillow's decompression-bomb refusal an ``ImageError``. Everything becomes either an (H, W, 3)
uint8 tensor or a (3, H, W) float32 tensor in [0, 1]; ``to_network_input`` applies the model's
input convention.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from . import ops
from .convention import InputConvention, streams


class ImageError(ValueError):
    """An input that is not a usable image (shape, dtype, range, empty, unreadable)."""


@dataclass
class Image:
    """One decoded image and how to hand results back for it."""

    pixels: torch.Tensor  # (H, W, 3) uint8, or (3, H, W) float32 in [0, 1] (3k: k joined streams)
    as_torch: bool  # results go back as torch tensors (else numpy)
    device: Optional[torch.device]  # device of a torch input; results return there

    @property
    def size(self):
        return tuple(self.pixels.shape[:2] if self.pixels.dtype == torch.uint8 else self.pixels.shape[1:])


def _check_nonempty(shape, what):
    if any(s == 0 for s in shape):
        raise ImageError(f"{what} is empty (shape {tuple(shape)})")


def _channels_last_to_rgb(t: torch.Tensor, what: str) -> torch.Tensor:
    """(H, W), (H, W, 1|3|4) → (H, W, 3)."""
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() != 3:
        raise ImageError(f"{what} must be H×W or H×W×C, got shape {tuple(t.shape)}")
    c = t.shape[-1]
    if c == 1:
        return t.expand(*t.shape[:2], 3)
    if c == 3:
        return t
    if c == 4:  # RGBA: alpha dropped
        return t[..., :3]
    raise ImageError(f"{what} has {c} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA), "
                     f"as the last axis of H×W×C")


def _check_float_range(t: torch.Tensor, what: str):
    if not torch.isfinite(t).all():
        raise ImageError(f"{what} contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0.0 or hi > 1.0:
        raise ImageError(f"float {what} must hold values in [0, 1], found [{lo:g}, {hi:g}]; "
                         "pass uint8 for 0-255 data")


def numpy_to_tensor(a: np.ndarray) -> torch.Tensor:
    # torch wants contiguous, writable memory (PIL hands out read-only arrays).
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _from_numpy(a: np.ndarray, what: str) -> torch.Tensor:
    _check_nonempty(a.shape, what)
    if a.dtype == np.uint8:
        return _channels_last_to_rgb(numpy_to_tensor(a), what)
    if a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif a.dtype.kind == "f":
        a = a.astype(np.float32)
    elif a.dtype == np.bool_:
        raise ImageError(f"{what} is a boolean array; expected uint8 or float in [0, 1]")
    else:
        raise ImageError(f"{what} has dtype {a.dtype}; expected uint8, uint16 or float in [0, 1]")
    t = _channels_last_to_rgb(numpy_to_tensor(a), what)
    _check_float_range(t, what)
    return t.permute(2, 0, 1)


def _from_torch(t: torch.Tensor, what: str) -> torch.Tensor:
    _check_nonempty(t.shape, what)
    if t.dtype == torch.uint8:
        # H×W×C like numpy, or C×H×W as torchvision.io.read_image returns: the channel axis is
        # the one of size 1, 3 or 4 (the last one when both could be).
        if t.dim() == 3 and t.shape[-1] not in (1, 3, 4):
            if t.shape[0] not in (1, 3, 4):
                raise ImageError(f"{what} has shape {tuple(t.shape)}: uint8 tensors are H×W×C or "
                                 "C×H×W with C = 1 (gray), 3 (RGB) or 4 (RGBA)")
            t = t.permute(1, 2, 0)
        return _channels_last_to_rgb(t, what)
    if not t.is_floating_point():
        raise ImageError(f"{what} has dtype {t.dtype}; torch images are H×W×C uint8 or "
                         "C×H×W float in [0, 1]")
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ImageError(f"float tensor {what} must be C×H×W, got shape {tuple(t.shape)}")
    c = t.shape[0]
    if c == 1:
        t = t.expand(3, *t.shape[1:])
    elif c == 4:
        t = t[:3]
    elif c != 3:
        raise ImageError(f"float tensor {what} has {c} channels on its first axis; expected C×H×W "
                         "with C = 1, 3 or 4")
    t = t.float()
    _check_float_range(t, what)
    return t


def _from_pil(im, what: str) -> torch.Tensor:
    mode = im.mode
    if mode.startswith("I;16"):
        return _from_numpy(np.asarray(im, dtype=np.uint16), what)
    if mode == "F":
        return _from_numpy(np.asarray(im, dtype=np.float32), what)
    if mode == "I":
        a = np.asarray(im)
        if a.size and a.min() >= 0 and a.max() <= 65535:
            return _from_numpy(a.astype(np.uint16), what)
        raise ImageError(f"{what}: 32-bit integer image with values outside 0..65535")
    _check_nonempty((im.height, im.width), what)
    return _from_numpy(np.asarray(im.convert("RGB")), what)


def _open_path(path, what: str):
    from PIL import Image as PILImage, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path}")
    if os.path.isdir(path):
        raise ImageError(f"{what} is a directory, not an image file: {path}")
    try:
        with PILImage.open(path) as im:
            im.load()
            # As displayed: a phone photo's EXIF orientation (OpenCV's imread and torchvision's
            # read_image(apply_exif_orientation=True) do the same), so labels line up.
            upright = ImageOps.exif_transpose(im)
            return _from_pil(upright, f"image file {path}")
    except PILImage.DecompressionBombError as e:
        size = _declared_size(e)
        raise ImageError(f"image file {path} declares {size} pixels, beyond Pillow's "
                         f"decompression-bomb limit ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f"cannot read image file {path}: {e}") from e


def _declared_size(e: Exception) -> str:
    """W×H that Pillow's size check refused, taken from the check's frame ("too many" if absent)."""
    # Reading the header again would need MAX_IMAGE_PIXELS lifted, a process-wide setting that
    # other threads' opens rely on meanwhile; the check was handed the size (header, GIF frame,
    # TIFF tile or WebP canvas alike).
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and tb.tb_frame.f_code.co_name == "_decompression_bomb_check":
        size = tb.tb_frame.f_locals.get("size")
        if isinstance(size, tuple) and len(size) == 2:
            return f"{size[0]}x{size[1]}"
    return "too many"


def read_image(img, what: str = "image") -> Image:
    """Decode one user image (see module doc)."""
    if isinstance(img, torch.Tensor):
        return Image(_from_torch(img, what), True, img.device)
    if isinstance(img, np.ndarray):
        return Image(_from_numpy(img, what), False, None)
    if isinstance(img, (str, os.PathLike)):
        return Image(_open_path(img, what), False, None)
    try:
        from PIL import Image as PILImage
    except ImportError:  # pragma: no cover - pillow is a dependency
        PILImage = None
    if PILImage is not None and isinstance(img, PILImage.Image):
        return Image(_from_pil(img, what), False, None)
    raise TypeError(f"{what} has unsupported type {type(img).__name__}; pass a numpy array, "
                    "PIL image, torch tensor or a path")


def to_network_input(pixels: torch.Tensor, convention, device, dtype) -> torch.Tensor:
    """Normalise (N, H, W, 3) uint8 or (N, 3, H, W) float [0, 1] pixels to the net's (N, 3, H, W).

    Both go through the one preprocessing formula, ``ops.normalize`` (the reference ``preprocess``
    head op's): uint8 frames with scale/255 per step (exact for the Caffe 0-255 scale), float
    pixels as they are, in float32. Plain tensor operations, so the ONNX exporter traces them. A
    model that takes several images (``convention`` a tuple, one per stream) gets their channels
    3 by 3 (N, H, W, 3k), each normalised by its own convention, concatenated.
    """
    x = pixels.to(device, non_blocking=True)
    frames = x.dtype == torch.uint8
    if frames:
        x = x.permute(0, 3, 1, 2)
    parts = [ops.normalize(x[:, 3 * i:3 * i + 3], mean=c.mean, std=c.std,
                           scale=c.scale / 255.0 if frames else c.scale, bgr=c.bgr,
                           dtype=dtype).contiguous()
             for i, c in enumerate(streams(convention))]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def join_streams(images, what: str = "image") -> "Image":
    """One ``Image`` of a model's several input images (colour, HHA): their channels side by
    side, (H, W, 3k) uint8 or (3k, H, W) float; the first image says how results go back."""
    first = images[0]
    for other in images[1:]:
        if other.size != first.size:
            raise ImageError(f"the {what}s of one input differ in size: {first.size} and {other.size}")
        if other.pixels.dtype != first.pixels.dtype:
            raise ImageError(f"the {what}s of one input must be alike (all uint8, or all float in "
                             f"[0, 1]); got {first.pixels.dtype} and {other.pixels.dtype}")
    dim = -1 if first.pixels.dtype == torch.uint8 else 0
    pixels = torch.cat([im.pixels.to(first.pixels.device) for im in images], dim)
    return Image(pixels, first.as_torch, first.device)


def model_scores(model: torch.nn.Module, pixels: torch.Tensor, convention: InputConvention) -> torch.Tensor:
    """(N, C, H, W) class scores of a reference ``model`` for decoded pixels, in ``convention``,
    on the model's device and in its dtype: the one way the reference path scores an image."""
    p = next(model.parameters())
    return model(to_network_input(pixels, convention, p.device, p.dtype))

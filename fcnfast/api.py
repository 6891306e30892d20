"""The object users hold: ``fcnfast.load(path).segment(img)``."""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from .convention import InputConvention
from .images import Image, ImageError, read_image, to_network_input
from .models import FCNBase
from .palette import VOC_CLASSES, voc_palette

BACKENDS = ("auto", "torch", "triton", "cuda", "cpp")
_DTYPES = {torch.float32, torch.float64, torch.float16, torch.bfloat16}


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _label_dtype(num_classes: int) -> torch.dtype:
    # The head-ops contract: uint8 labels when they fit, int32 otherwise.
    return torch.uint8 if num_classes <= 256 else torch.int32


class Segmenter:
    """A loaded FCN and everything needed to turn images into label maps.

    ``backend="torch"`` runs the reference model; the kernel backends come with the engine, and
    ``"auto"`` picks the fastest one that runs here (today: the reference).
    """

    def __init__(self, model: FCNBase, *, class_names: Optional[Sequence[str]] = None,
                 input_convention: Optional[InputConvention] = None, palette=None,
                 device=None, backend: str = "auto", dtype: Optional[torch.dtype] = None):
        if not isinstance(model, FCNBase):
            raise TypeError(f"model must be an fcnfast reference model, got {type(model).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if backend not in ("auto", "torch"):
            # A named backend never falls back: say plainly that it cannot run here.
            raise RuntimeError(f"backend {backend!r} cannot run whole models in this version of "
                               "fcnfast; use backend='torch' (the reference) or 'auto'")
        dtype = torch.float32 if dtype is None else dtype
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be one of float32, float64, float16, bfloat16; got {dtype}")
        self.device = torch.device(device) if device is not None else _default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for but CUDA is not available here")
        self.dtype = dtype
        self.backend = "torch"
        self.model = model.eval().to(device=self.device, dtype=dtype)
        n = model.num_classes
        if class_names is None:
            class_names = list(VOC_CLASSES) if n == len(VOC_CLASSES) else [f"class_{i}" for i in range(n)]
        if len(class_names) != n:
            raise ValueError(f"{len(class_names)} class names for a model with {n} classes")
        self.classes = list(class_names)
        self.input_convention = input_convention or model.input_convention
        self.palette = np.asarray(palette if palette is not None else voc_palette(max(n, 256)),
                                  dtype=np.uint8)
        if self.palette.ndim != 2 or self.palette.shape[1] != 3 or len(self.palette) < n:
            raise ValueError(f"palette must be (>= {n}, 3) RGB values, got shape {self.palette.shape}")

    # -- attributes ----------------------------------------------------------------------------
    @property
    def arch(self) -> str:
        return self.model.arch

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def __repr__(self) -> str:
        return (f"Segmenter(arch={self.arch!r}, classes={self.num_classes}, device={self.device}, "
                f"backend={self.backend!r}, dtype={self.dtype})")

    # -- inference -----------------------------------------------------------------------------
    @torch.inference_mode()
    def _scores(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) class scores of a batch of decoded pixels of one size."""
        x = to_network_input(pixels, self.input_convention, self.device, self.dtype)
        return self.model(x)

    def _labels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._scores(pixels).argmax(1).to(_label_dtype(self.num_classes))

    @staticmethod
    def _hand_back(t: torch.Tensor, image: Image):
        if image.as_torch:
            return t.to(image.device)
        return t.cpu().numpy()

    def segment(self, img):
        """H×W label map of one image (uint8 when classes <= 256, else int32).

        numpy / PIL / path in → numpy out; torch in → torch out on the input's device.
        """
        image = read_image(img)
        return self._hand_back(self._labels(image.pixels.unsqueeze(0))[0], image)

    def logits(self, img):
        """C×H×W float32 class scores at full resolution (the reference path)."""
        image = read_image(img)
        return self._hand_back(self._scores(image.pixels.unsqueeze(0))[0].float(), image)

    def segment_batch(self, images, batch_size: int = 8):
        """Label maps of many images.

        ``images`` is a list (of anything ``segment`` takes; sizes may differ) → list of label
        maps, or an N×H×W×3 array / tensor (or N×C×H×W float tensor) → N×H×W labels. Images of
        equal size run together; sizes are never padded (padding changes FCN outputs).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        stacked = isinstance(images, (np.ndarray, torch.Tensor))
        if stacked:
            if images.ndim != 4:
                raise ImageError(f"a stacked batch must be 4-D (N×H×W×C, or N×C×H×W float tensor), "
                                 f"got shape {tuple(images.shape)}")
            if images.shape[0] == 0:
                raise ImageError("the batch is empty")
            items = [images[i] for i in range(images.shape[0])]
        else:
            items = list(images)
            if not items:
                return []
        decoded = [read_image(im, f"image {i}") for i, im in enumerate(items)]
        groups = {}
        for i, image in enumerate(decoded):
            key = (image.pixels.dtype, tuple(image.pixels.shape))
            groups.setdefault(key, []).append(i)
        labels = [None] * len(decoded)
        for idx in groups.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                batch = torch.stack([decoded[i].pixels.to(self.device) for i in chunk])
                for i, lab in zip(chunk, self._labels(batch)):
                    labels[i] = self._hand_back(lab, decoded[i])
        if stacked:
            return torch.stack(labels) if isinstance(images, torch.Tensor) else np.stack(labels)
        return labels

    # -- display -------------------------------------------------------------------------------
    def colorize(self, labels):
        """H×W×3 uint8 RGB picture of a label map, in the model's palette (VOC's by default)."""
        is_torch = isinstance(labels, torch.Tensor)
        lab = labels.detach().cpu().numpy() if is_torch else np.asarray(labels)
        if lab.dtype.kind not in "iu":
            raise TypeError(f"labels must be an integer array, got dtype {lab.dtype}")
        if lab.size and (lab.min() < 0 or lab.max() >= len(self.palette)):
            raise ValueError(f"labels must lie in [0, {len(self.palette) - 1}], "
                             f"found [{lab.min()}, {lab.max()}]")
        rgb = self.palette[lab]
        return torch.from_numpy(rgb).to(labels.device) if is_torch else rgb


def load(path, device=None, backend: str = "auto", dtype: Optional[torch.dtype] = None,
         arch: Optional[str] = None) -> Segmenter:
    """Load a checkpoint (pytorch-fcn, torchvision, wrapped, DDP, .pt/.pth/.safetensors, or fcnfast's
    own format) into a ready Segmenter. ``arch=`` overrides detection (needed for FCN-8s at-once,
    whose keys equal FCN-8s)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    model, info = ckpt.load_model(path, arch=arch)
    return Segmenter(model, class_names=info.class_names, input_convention=info.input_convention,
                     palette=info.palette, device=device, backend=backend, dtype=dtype)


def save(obj, path) -> None:
    """Write a model or Segmenter in fcnfast's native format (safetensors + metadata)."""
    if isinstance(obj, Segmenter):
        model = obj.model
        if obj.dtype != torch.float32:
            warnings.warn(f"saving weights in the Segmenter's dtype {obj.dtype}", stacklevel=2)
        ckpt.save_native(model, path, class_names=obj.classes, input_convention=obj.input_convention,
                         palette=obj.palette[:obj.num_classes].tolist())
    elif isinstance(obj, FCNBase):
        ckpt.save_native(obj, path)
    else:
        raise TypeError(f"save() takes a Segmenter or an fcnfast model, got {type(obj).__name__}")

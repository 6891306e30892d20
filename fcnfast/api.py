"""The object users hold: ``fcnfast.load(path).segment(img)``."""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from . import contract, ops
from .convention import InputConvention
from .images import Image, ImageError, join_streams, model_scores, read_image
from .models import FCNBase
from .palette import VOC_CLASSES, voc_palette

# What ``backend=`` takes: "auto" or one of the ops' backends ("torch" is the reference model).
BACKENDS = ("auto",) + ops.BACKENDS
_DTYPES = {torch.float32, torch.float64, torch.float16, torch.bfloat16}


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _not_a_path(images, what: str) -> None:
    """A string is one path, not a sequence of frames: iterating it would read each character."""
    if isinstance(images, (str, bytes, os.PathLike)):
        raise TypeError(f"{what} takes a sequence (or iterable) of images, got the single path "
                        f"{os.fsdecode(images)!r}; use segment() for one image, or pass [path]")


def _frame_batches(frames, batch_size: int, read):
    """Decoded frames (``read(frame, what)``) grouped into runs of equal size and pixel type, at
    most batch_size long."""
    batch = []
    for i, frame in enumerate(frames):
        image = read(frame, f"frame {i}")
        if batch and (len(batch) == batch_size or image.pixels.shape != batch[0].pixels.shape
                      or image.pixels.dtype != batch[0].pixels.dtype):
            yield batch
            batch = []
        batch.append(image)
    if batch:
        yield batch


def _default_class_names(head: Optional[str], n: int):
    """VOC's names for 21 classes, SIFT Flow's for its heads' 33 and 3, else class_0, ..."""
    if head in ("semantic", "geometric"):
        from .data.siftflow import SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES

        names = SIFTFLOW_SEMANTIC_CLASSES if head == "semantic" else SIFTFLOW_GEOMETRIC_CLASSES
        if len(names) == n:
            return list(names)
    if head is None and n == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(n)]


class Segmenter:
    """A loaded FCN and everything needed to turn images into label maps.

    ``backend="torch"`` runs the reference model (in ``dtype``, float32 by default). Every other
    backend runs the engine (``fcnfast.engine``): the trunk on cuDNN/oneDNN in the compute dtype
    (``dtype=None``: float16 on GPU, bfloat16 on CPUs that compute it natively, else float32),
    the head through ``fcnfast.ops`` on ``backend`` (``"auto"``: the measured winner per op).
    The float32 reference stays loaded: ``logits``, ``check`` and the precision guard use it.
    """

    def __init__(self, model: FCNBase, *, class_names: Optional[Sequence[str]] = None,
                 input_convention: Optional[InputConvention] = None, palette=None,
                 device=None, backend: str = "auto", dtype: Optional[torch.dtype] = None,
                 cuda_graphs: Optional[bool] = None):
        if not isinstance(model, FCNBase):
            raise TypeError(f"model must be an fcnfast reference model, got {type(model).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if dtype is not None and dtype not in _DTYPES:
            raise TypeError(f"dtype must be one of float32, float64, float16, bfloat16; got {dtype}")
        self.device = torch.device(device) if device is not None else _default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for but CUDA is not available here")
        self.backend = backend
        self.engine = None
        # float64 exists on the reference path only; auto goes there for it.
        wants_engine = backend != "torch" and not (backend == "auto" and dtype == torch.float64)
        if wants_engine and model.head_plans():
            ref_dtype = torch.float32
        else:
            self.backend = "torch"
            if wants_engine:
                if backend != "auto":  # a named backend never falls back
                    raise RuntimeError(f"backend {backend!r} cannot run a {type(model).__name__}: the "
                                       "engine knows the fcnfast reference FCNs only; use 'torch'")
                warnings.warn(f"fcnfast: the engine has no plan for {type(model).__name__}; running "
                              "the reference model", RuntimeWarning, stacklevel=2)
            ref_dtype = torch.float32 if dtype is None else dtype
        self.model = model.eval().to(device=self.device, dtype=ref_dtype)
        self.input_convention = input_convention or model.input_convention
        if self.backend != "torch":
            from .engine import Engine
            self.engine = Engine(self.model, self.device, dtype, backend, cuda_graphs=cuda_graphs,
                                 convention=self.input_convention)
        self.dtype = self.engine.dtype if self.engine is not None else ref_dtype
        n = model.num_classes
        if class_names is None:
            class_names = _default_class_names(model.heads[0] if model.heads else None, n)
        if len(class_names) != n:
            raise ValueError(f"{len(class_names)} class names for a model with {n} classes")
        self.classes = list(class_names)
        # A model of several input images (NYUDv2 colour + HHA) names them; segment() takes the
        # others as keywords (segment(rgb, hha=...)).
        self.input_names = tuple(getattr(model, "input_names", ("rgb",)))
        # A multi-head model (SIFT Flow): segment() returns {head: labels}; classes are the first
        # head's, head_class_names every head's.
        self.heads = tuple(model.heads)
        self.head_class_names = {h: (self.classes if i == 0 else _default_class_names(h, c))
                                 for i, (h, c) in enumerate(zip(self.heads, model.head_classes))}
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

    @property
    def op_backends(self) -> dict:
        """The backend each head op runs on ({} on the reference path)."""
        return self.engine.op_backends if self.engine is not None else {}

    def __repr__(self) -> str:
        return (f"Segmenter(arch={self.arch!r}, classes={self.num_classes}, device={self.device}, "
                f"backend={self.backend!r}, dtype={self.dtype})")

    # -- inference -----------------------------------------------------------------------------
    @torch.inference_mode()
    def _scores(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) class scores of a batch of decoded pixels of one size (the reference)."""
        return model_scores(self.model, pixels, self.input_convention)

    @property
    def model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _labels(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.engine is not None:
            if pixels.device.type == "cpu":  # labels go back to the host: one wait for both
                return self.engine.run_to_host(pixels.to(self.device, non_blocking=True))
            return self.engine.run(pixels.to(self.device, non_blocking=True))
        return self._argmax(self._scores(pixels))

    def _argmax(self, scores) -> torch.Tensor:
        """Labels of reference scores: (N, H, W), or (N, heads, H, W) of {head: scores}."""
        if isinstance(scores, dict):
            dtype = contract.label_dtype(max(self.model.head_classes))
            return torch.stack([contract.argmax_labels(scores[h]).to(dtype) for h in self.heads], 1)
        return contract.argmax_labels(scores)

    @staticmethod
    def _hand_back_one(t: torch.Tensor, image: Image):
        """One tensor back as the caller passed the image: numpy, or torch on its device."""
        return t.to(image.device) if image.as_torch else t.cpu().numpy()

    def _hand_back(self, t: torch.Tensor, image: Image):
        """One image's result as the caller passed it: numpy or torch (on the input's device); a
        multi-head model's (heads, ...) result as {head: result}."""
        out = self._hand_back_one(t, image)
        if self.heads:
            return {h: out[k] for k, h in enumerate(self.heads)}
        return out

    def _read(self, img, hha=None, what: str = "image") -> Image:
        """Decode one input: the image, and for a colour + HHA model its HHA image too."""
        if len(self.input_names) == 1:
            if hha is not None:
                raise TypeError(f"hha= is for models that take an HHA image; {self.arch} takes one "
                                "image")
            return read_image(img, what)
        if hha is None:
            raise TypeError(f"{self.arch} takes an HHA image too: segment(rgb, hha=...) "
                            "(fcnfast.data.hha_encode makes one from depth)")
        return join_streams([read_image(img, what), read_image(hha, f"HHA of {what}")], what)

    def _read_frame(self, frame, what: str) -> Image:
        """A stream's frame: an image, or (rgb, hha) for a colour + HHA model."""
        if len(self.input_names) > 1:
            if not (isinstance(frame, (tuple, list)) and len(frame) == 2):
                raise TypeError(f"{self.arch} streams (rgb, hha) pairs; {what} is a "
                                f"{type(frame).__name__}")
            return self._read(frame[0], frame[1], what)
        return read_image(frame, what)

    def segment(self, img, hha=None):
        """H×W label map of one image (uint8 when classes <= 256, else int32).

        numpy / PIL / path in → numpy out; torch in → torch out on the input's device. A model with
        several heads (SIFT Flow) gives {head: label map}; a colour + HHA model (NYUDv2) takes the
        HHA image as ``hha`` (same size; ``fcnfast.data.hha_encode`` makes one from depth).
        """
        image = self._read(img, hha)
        return self._hand_back(self._labels(image.pixels.unsqueeze(0))[0], image)

    def logits(self, img, hha=None):
        """C×H×W float32 class scores at full resolution (always the reference model: the engine
        never materialises them)."""
        image = self._read(img, hha)
        scores = self._scores(image.pixels.unsqueeze(0))
        if isinstance(scores, dict):  # several heads: {head: C×H×W}
            return {h: self._hand_back_one(scores[h][0].float(), image) for h in self.heads}
        return self._hand_back_one(scores[0].float(), image)

    def segment_batch(self, images, batch_size: int = 8, *, hha=None):
        """Label maps of many images.

        ``images`` is a list (of anything ``segment`` takes; sizes may differ) → list of label
        maps, or an N×H×W×3 array / tensor (or N×C×H×W float tensor) → N×H×W labels. Images of
        equal size run together; sizes are never padded (padding changes FCN outputs).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _not_a_path(images, "segment_batch")
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
        if hha is not None:
            _not_a_path(hha, "segment_batch's hha")
            hha = list(hha.unbind(0) if isinstance(hha, torch.Tensor) else hha)
            if len(hha) != len(items):
                raise ValueError(f"{len(items)} images but {len(hha)} HHA images")
        decoded = [self._read(im, None if hha is None else hha[i], f"image {i}")
                   for i, im in enumerate(items)]
        groups = {}
        for i, image in enumerate(decoded):
            key = (image.pixels.dtype, tuple(image.pixels.shape), image.pixels.device)
            groups.setdefault(key, []).append(i)
        labels = [None] * len(decoded)
        for idx in groups.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                batch = torch.stack([decoded[i].pixels for i in chunk])  # one upload per batch
                for i, lab in zip(chunk, self._labels(batch)):
                    labels[i] = self._hand_back(lab, decoded[i])
        if stacked:
            join = torch.stack if isinstance(images, torch.Tensor) else np.stack
            if self.heads:
                return {h: join([lab[h] for lab in labels]) for h in self.heads}
            return join(labels)
        return labels

    def stream(self, frames, batch_size: int = 4, *, smooth: Optional[float] = None,
               smooth_reset: Optional[float] = 0.3):
        """Label maps of an iterable of frames (numpy / torch / PIL / paths), yielded in order.

        Consecutive frames of one size run together in batches of up to ``batch_size``. On GPU the
        upload, compute and download of successive batches overlap on separate CUDA streams; memory
        stays flat however long the stream.

        ``smooth=a`` (in [0, 1)) averages the class scores over time against flicker:
        ``s_t = a·s_{t-1} + (1-a)·x_t``, on the coarse score map before the final upsampling (equal,
        the upsampling being linear, to averaging the full-resolution logits). It restarts when the
        frame size changes or at a scene cut: consecutive frames whose mean absolute difference (0-1
        intensity scale) exceeds ``smooth_reset`` (None: only size changes restart it).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        _not_a_path(frames, "stream")
        batches = _frame_batches(frames, batch_size, self._read_frame)
        if smooth is not None:  # frame after frame in order: no overlap of batches
            from .engine.smoothing import ScoreSmoother

            smoother = ScoreSmoother(smooth, smooth_reset)
            results = ((self._smoothed_labels(torch.stack([im.pixels for im in ims]).to(self.device),
                                              smoother), ims) for ims in batches)
        elif self.engine is not None and self.device.type == "cuda":
            from .engine.stream import cuda_pipeline

            results = cuda_pipeline(((torch.stack([im.pixels for im in ims]), ims)
                                     for ims in batches), self.engine)
        else:
            results = ((self._labels(torch.stack([im.pixels for im in ims])), ims) for ims in batches)
        for labels, images in results:
            for lab, image in zip(labels, images):
                yield self._hand_back(lab, image)

    def _smoothed_labels(self, pixels: torch.Tensor, smoother) -> torch.Tensor:
        if self.engine is not None:
            return self.engine.run_smoothed(pixels, smoother)
        # The reference path averages the full-resolution logits: the definition itself.
        scores = self._scores(pixels)
        if isinstance(scores, dict):  # several heads averaged as one map, split back
            joint = smoother.update(torch.cat([scores[h] for h in self.heads], 1), pixels)
            return self._argmax(dict(zip(self.heads, joint.split(self.model.head_classes, 1))))
        return self._argmax(smoother.update(scores, pixels))

    def check(self, img=None, hha=None):
        """Run the engine and the float32 reference on ``img`` (default: a generated test scene) and
        report label agreement on firm pixels, the max score error and the backend of each op."""
        if self.engine is None:
            raise RuntimeError("check() compares the engine with the reference; this Segmenter runs "
                               "the reference itself (backend='torch')")
        from .engine.compare import compare

        if img is None:
            from .data.synthetic import synthetic_scene

            img = synthetic_scene(0, 240, 320)[0]
        if len(self.input_names) > 1 and hha is None:
            hha = img  # a stand-in second image: engine and reference see the same input
        image = self._read(img, hha)
        return compare(self.engine, image.pixels.unsqueeze(0).to(self.device))

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


DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "default.safetensors")


def model_path(name):
    """The file a model name means: ``"default"`` is the model shipped with fcnfast; a release
    name of ``fcnfast.hub`` (``"voc-fcn8s"``...) is fetched into the cache once and means the
    converted file there. A path that exists wins over a release name."""
    if name != "default":
        if isinstance(name, str) and not os.path.exists(name):
            from . import hub  # the one upward call: hub turns a name into a file

            if name in hub.REGISTRY:
                return str(hub.fetch(name))
        return name
    if not os.path.exists(DEFAULT_MODEL):
        raise FileNotFoundError(f"the default model is not installed ({DEFAULT_MODEL} is missing)")
    return DEFAULT_MODEL


def load(path="default", device=None, backend: str = "auto", dtype: Optional[torch.dtype] = None,
         arch: Optional[str] = None, num_classes: Optional[int] = None,
         cuda_graphs: Optional[bool] = None) -> Segmenter:
    """Load a checkpoint (pytorch-fcn, torchvision, wrapped, DDP, .pt/.pth/.safetensors, or fcnfast's
    own format) into a ready Segmenter.

    ``"default"`` (or no path) is the small FCN-8s shipped with fcnfast, trained on its synthetic
    scenes. A release name (``"voc-fcn8s"``, ``"fcn_resnet50_coco"``, ...: ``fcnfast.hub.REGISTRY``)
    is downloaded, verified and converted once into the cache (``fcnfast.hub.fetch``).
    ``arch=`` overrides detection (needed for FCN-8s at-once, whose keys equal FCN-8s).
    ``num_classes=N`` keeps the trunk and starts fresh score layers for N classes (fine-tuning).
    ``backend``/``dtype``/``cuda_graphs``: see ``Segmenter``.
    """
    path = model_path(path)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    model, info = ckpt.load_model(path, arch=arch)
    class_names, palette = info.class_names, info.palette
    if num_classes is not None and num_classes != model.num_classes:
        from .surgery import reset_classes

        model = reset_classes(model, num_classes, inplace=True)
        class_names = palette = None  # the old classes' names and colours no longer apply
    return Segmenter(model, class_names=class_names, input_convention=info.input_convention,
                     palette=palette, device=device, backend=backend, dtype=dtype,
                     cuda_graphs=cuda_graphs)


def save(obj, path) -> None:
    """Write a model or Segmenter in fcnfast's native format (safetensors + metadata)."""
    if isinstance(obj, Segmenter):
        model = obj.model
        if obj.model_dtype != torch.float32:
            warnings.warn(f"saving weights in the Segmenter's dtype {obj.model_dtype}", stacklevel=2)
        ckpt.save_native(model, path, class_names=obj.classes, input_convention=obj.input_convention,
                         palette=obj.palette[:obj.num_classes].tolist())
    elif isinstance(obj, FCNBase):
        ckpt.save_native(obj, path)
    else:
        raise TypeError(f"save() takes a Segmenter or an fcnfast model, got {type(obj).__name__}")

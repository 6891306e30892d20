"""Score a loaded model over a dataset the way the paper's ``score.py`` does: one confusion
histogram per head, accumulated image by image (predictions are never held), and from it pixel
accuracy, mean accuracy, mean IU, frequency-weighted IU and each class's IU.

``evaluate_dataset(segmenter, dataset)`` takes any ``fcnfast.Segmenter`` (engine or reference) and
any dataset of ``fcnfast.data`` (or anything indexable yielding ``(image, labels)``). A two-head
model (SIFT Flow: semantic and geometric) is scored on both heads when the dataset gives both label
maps (``SIFTFlow(..., target="both")``); a single-head model on such a dataset is scored on its
semantic labels. ``open_eval_dataset`` opens a dataset by name for it, as ``fcnfast eval`` does.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .metrics import ConfusionMeter

__all__ = ["EvalResult", "HeadScores", "evaluate_dataset", "open_eval_dataset", "EVAL_DATASETS"]

EVAL_DATASETS = ("voc", "sbd", "siftflow", "nyud", "folder", "synthetic")
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fwavacc")
# The name a single-head model's one output is reported under.
_SINGLE_HEAD = "semantic"


def _nan_to_none(v: float):
    return None if v is None or math.isnan(v) else float(v)


@dataclass
class HeadScores:
    """score.py's four metrics of one head (fractions in [0, 1]; nan where undefined), each class's
    IU (nan: the class is in neither the ground truth nor the prediction) and the histogram
    ``confusion[gt, pred]`` they come from."""

    head: str
    class_names: List[str]
    pixel_acc: float
    mean_acc: float
    mean_iu: float
    fwavacc: float
    per_class_iu: Dict[str, float]
    confusion: np.ndarray = field(repr=False)

    @property
    def metrics(self) -> Dict[str, float]:
        return {k: getattr(self, k) for k in METRICS}

    def to_dict(self) -> dict:
        return {"classes": len(self.class_names),
                "metrics": {k: _nan_to_none(v) for k, v in self.metrics.items()},
                "per_class_iu": {k: _nan_to_none(v) for k, v in self.per_class_iu.items()}}


@dataclass
class EvalResult:
    """What ``evaluate_dataset`` measured. ``heads`` maps each scored head ("semantic", and
    "geometric" for SIFT Flow's two-head nets) to its ``HeadScores``; the metric attributes
    (``mean_iu`` ...) are the first head's. ``seconds`` is the wall time of the whole pass (reading,
    segmenting, counting); ``images_per_s`` = ``count / seconds``."""

    heads: Dict[str, HeadScores]
    count: int
    seconds: float
    model: Optional[str] = None
    arch: Optional[str] = None
    dataset: Optional[str] = None
    split: Optional[str] = None
    backend: Optional[str] = None
    device: Optional[str] = None
    dtype: Optional[str] = None

    @property
    def images_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    @property
    def primary(self) -> HeadScores:
        return next(iter(self.heads.values()))

    @property
    def pixel_acc(self) -> float:
        return self.primary.pixel_acc

    @property
    def mean_acc(self) -> float:
        return self.primary.mean_acc

    @property
    def mean_iu(self) -> float:
        return self.primary.mean_iu

    @property
    def fwavacc(self) -> float:
        return self.primary.fwavacc

    @property
    def per_class_iu(self) -> Dict[str, float]:
        return self.primary.per_class_iu

    @property
    def metrics(self) -> Dict[str, float]:
        return self.primary.metrics

    def to_dict(self) -> dict:
        """JSON-ready: metadata, the first head's ``metrics`` and ``per_class_iu`` at the top, and
        every head's under ``heads`` (undefined values as null)."""
        first = self.primary.to_dict()
        rate = self.images_per_s
        return {"model": self.model, "arch": self.arch, "dataset": self.dataset,
                "split": self.split, "count": self.count, "seconds": self.seconds,
                "images_per_s": rate if math.isfinite(rate) else None,
                "backend": self.backend, "device": self.device, "dtype": self.dtype,
                "metrics": first["metrics"], "per_class_iu": first["per_class_iu"],
                "heads": {h: s.to_dict() for h, s in self.heads.items()}}

    def table(self, per_class: bool = True) -> str:
        """The console summary: one row of percentages per head, then each class's IU."""
        width = max(len("head"), *(len(h) for h in self.heads))
        lines = [f"{'head'.ljust(width)}  pixel acc  mean acc  mean IU  f.w. IU"]
        for h, s in self.heads.items():
            lines.append(f"{h.ljust(width)}  " + "  ".join(
                _pct(v).rjust(len(col)) for v, col in zip(
                    (s.pixel_acc, s.mean_acc, s.mean_iu, s.fwavacc),
                    ("pixel acc", "mean acc", "mean IU", "f.w. IU"))))
        if per_class:
            for h, s in self.heads.items():
                lines.append(f"per-class IU ({h}):")
                cells = [f"{name} {_pct(iu)}" for name, iu in s.per_class_iu.items()]
                cell_w = max(len(c) for c in cells)
                for i in range(0, len(cells), 4):
                    lines.append("  " + "  ".join(c.ljust(cell_w) for c in cells[i:i + 4]).rstrip())
        return "\n".join(lines)


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


# ---------------------------------------------------------------------------- what is scored

@dataclass(frozen=True)
class _Pairing:
    """One scored head: the model output it reads (None: a single-head model's labels) and the
    dataset label map it compares with (None: the dataset's single map)."""

    name: str
    model_head: Optional[str]
    label_head: Optional[str]
    num_classes: int
    class_names: Tuple[str, ...]


def _dataset_label_heads(dataset) -> Optional[Tuple[str, ...]]:
    """The heads a dataset's label tuples stand for, in order; None for one label map per image."""
    heads = getattr(dataset, "label_heads", None)
    if heads:
        return tuple(heads)
    from .data import SIFTFlow

    if isinstance(dataset, SIFTFlow) and dataset.target == "both":
        return ("semantic", "geometric")
    return None


def _dataset_classes(dataset, label_head: Optional[str]) -> Tuple[str, ...]:
    names = getattr(dataset, f"{label_head}_classes" if label_head else "classes", None)
    return tuple(names) if names else ()


def _describe(dataset) -> str:
    split = getattr(dataset, "split", None)
    return f"{type(dataset).__name__}" + (f" {split}" if split else "")


def _pairings(segmenter, dataset) -> List[_Pairing]:
    model_heads = tuple(getattr(segmenter, "heads", ()) or ())
    label_heads = _dataset_label_heads(dataset)
    target = getattr(dataset, "target", None)
    if model_heads and label_heads:
        common = [h for h in model_heads if h in label_heads]
        if not common:
            raise ValueError(f"the model's heads {', '.join(model_heads)} match none of the "
                             f"dataset's label maps ({', '.join(label_heads)})")
        pairs = [(h, h, h) for h in common]
    elif model_heads:  # one label map: the head it names (SIFTFlow target=), else the first
        head = target if target in model_heads else model_heads[0]
        pairs = [(head, head, None)]
    elif label_heads:  # a single-head model scores the semantic labels
        head = "semantic" if "semantic" in label_heads else label_heads[0]
        pairs = [(head, None, head)]
    else:
        name = target if isinstance(target, str) and target in ("semantic", "geometric") \
            else _SINGLE_HEAD
        pairs = [(name, None, None)]
    out = []
    for name, model_head, label_head in pairs:
        model_names = list(segmenter.head_class_names[model_head] if model_head
                           else segmenter.classes)
        data_names = _dataset_classes(dataset, label_head)
        n = len(model_names)
        if data_names and len(data_names) != n:
            what = f"{model_head} head" if model_head else "model"
            labels = f" {label_head}" if label_head else ""
            raise ValueError(f"class-count mismatch: the {what} has {n} classes but "
                             f"{_describe(dataset)} has {len(data_names)}{labels} classes")
        out.append(_Pairing(name, model_head, label_head, n, tuple(data_names or model_names)))
    return out


def _pick_labels(labels, pairing: _Pairing, label_heads, index: int):
    if pairing.label_head is None:
        if isinstance(labels, (tuple, list, dict)):
            raise ValueError(f"sample {index}: expected one label map, got {type(labels).__name__}")
        return labels
    if isinstance(labels, dict):
        return labels[pairing.label_head]
    if not isinstance(labels, (tuple, list)) or len(labels) != len(label_heads):
        raise ValueError(f"sample {index}: expected {len(label_heads)} label maps "
                         f"({', '.join(label_heads)}), got {type(labels).__name__}")
    return labels[label_heads.index(pairing.label_head)]


def _pick_prediction(pred, pairing: _Pairing):
    return pred[pairing.model_head] if pairing.model_head else pred


def _split_input(image, wants_hha: bool, index: int):
    """(rgb, hha or None) of one sample's input: an H×W×6 RGB-HHA image splits in two."""
    channels = image.shape[-1] if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 3 \
        else None
    if wants_hha:
        if channels != 6:
            raise ValueError(f"sample {index}: the model takes an RGB and an HHA image; the dataset "
                             f"gives {tuple(image.shape) if channels else type(image).__name__} "
                             "inputs (open NYUDv2 with modality='rgbhha')")
        return image[..., :3], image[..., 3:]
    if channels == 6:
        raise ValueError(f"sample {index}: the dataset gives H×W×6 (RGB-HHA) inputs but the model "
                         "takes one image (open NYUDv2 with modality='rgb' or 'hha')")
    return image, None


# ---------------------------------------------------------------------------- the pass

def evaluate_dataset(segmenter, dataset, *, limit: Optional[int] = None, progress: bool = True,
                     batch_size: int = 1, ignore_index: int = 255) -> EvalResult:
    """score.py's metrics of ``segmenter`` over ``dataset`` (its first ``limit`` samples).

    Ground truth equal to ``ignore_index`` or outside ``[0, classes)`` is left out, as in score.py.
    Images run through ``Segmenter.stream`` in order: consecutive images of one size are grouped
    into batches of up to ``batch_size`` (overlapped with the copies on GPU); any sizes are fine. A
    model taking RGB and HHA (``input_names == ("rgb", "hha")``) gets each H×W×6 sample's halves.
    ``progress`` shows a tqdm bar on stderr. Raises ValueError for an empty dataset or a class
    count that differs between the dataset and the model.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    total = len(dataset)
    if total == 0:
        raise ValueError(f"the dataset is empty: {_describe(dataset)} has no samples")
    n = total if limit is None else min(limit, total)
    pairings = _pairings(segmenter, dataset)
    label_heads = _dataset_label_heads(dataset)
    meters = {p.name: ConfusionMeter(p.num_classes, ignore_index) for p in pairings}
    wants_hha = "hha" in tuple(getattr(segmenter, "input_names", ()) or ())

    from tqdm import tqdm

    bar = tqdm(total=n, desc="eval", unit="img", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    pending = deque()  # the labels of images handed to the segmenter, not yet scored

    def inputs():
        for i in range(n):
            image, labels = dataset[i]
            rgb, hha = _split_input(image, wants_hha, i)
            pending.append((i, labels))
            yield rgb if hha is None else (rgb, hha)

    if wants_hha:
        predictions = (segmenter.segment(rgb, hha=hha) for rgb, hha in inputs())
    else:
        predictions = segmenter.stream(inputs(), batch_size=batch_size)
    first = meters[pairings[0].name]
    start = time.perf_counter()
    count = 0
    try:
        for pred in predictions:
            i, labels = pending.popleft()
            for p in pairings:
                gt = _pick_labels(labels, p, label_heads, i)
                got = _pick_prediction(pred, p)
                if tuple(gt.shape) != tuple(got.shape):
                    raise ValueError(f"sample {i}: labels are {tuple(gt.shape)} but the "
                                     f"{p.name} prediction is {tuple(got.shape)}")
                meters[p.name].update(gt, got)
            count += 1
            bar.update(1)
            if progress and (count % 10 == 0 or count == n):
                bar.set_postfix_str(f"mIU {_pct(first.scores()['mean_iu'])}", refresh=False)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    heads = {}
    for p in pairings:
        s = meters[p.name].scores()
        iu = s["per_class_iu"]
        heads[p.name] = HeadScores(p.name, list(p.class_names), s["pixel_acc"], s["mean_acc"],
                                   s["mean_iu"], s["fwavacc"],
                                   {name: float(iu[k]) for k, name in enumerate(p.class_names)},
                                   meters[p.name].hist)
    dtype = getattr(segmenter, "dtype", None)
    return EvalResult(heads, count, seconds, arch=getattr(segmenter, "arch", None),
                      dataset=type(dataset).__name__, split=getattr(dataset, "split", None),
                      backend=getattr(segmenter, "backend", None),
                      device=str(segmenter.device) if hasattr(segmenter, "device") else None,
                      dtype=str(dtype).replace("torch.", "") if dtype is not None else None)


# ---------------------------------------------------------------------------- datasets by name

def open_eval_dataset(name: str, root: Optional[str], split: Optional[str] = None, *,
                      segmenter=None, sbd_root: Optional[str] = None,
                      modality: Optional[str] = None, synthetic_count: int = 20):
    """The evaluation split of dataset ``name`` (one of ``EVAL_DATASETS``) under ``root``.

    The default split is the paper's (``DEFAULT_SPLITS``: VOC ``seg11valid``, read from
    ``ImageSets/Segmentation/seg11valid.txt`` or computed with ``sbd_root``; SBD ``val``; SIFT Flow
    and NYUDv2 ``test``). SIFT Flow is opened with both label maps when ``segmenter`` has a
    geometric head. NYUDv2's ``modality`` defaults to ``"rgbhha"`` for a model taking an HHA image
    too, else ``"rgb"``. "synthetic" (no root) is ``synthetic_count`` held-out generated scenes.
    """
    from .training.dataset_names import DEFAULT_SPLITS, open_dataset

    if name not in EVAL_DATASETS:
        raise ValueError(f"--data must be one of {', '.join(EVAL_DATASETS)}; got {name!r}")
    if name == "synthetic":
        return open_dataset(name, val=True, synthetic_count=synthetic_count, seed=0)
    if root is None:
        raise ValueError(f"--data {name} needs --root DIR (the dataset's folder)")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root not found: {root!r} is not a directory")
    if name in ("folder", "sbd"):
        if sbd_root is not None or modality is not None:
            raise ValueError("--sbd-root is for --data voc, --modality for --data nyud")
        return open_dataset(name, root, split, val=True)
    split = split or DEFAULT_SPLITS[name][1]
    from . import data

    if name == "voc":
        if modality is not None:
            raise ValueError("--modality is for --data nyud")
        return data.VOCSegmentation(root, split=split, sbd_root=sbd_root)
    if sbd_root is not None:
        raise ValueError("--sbd-root is for --data voc")
    if name == "siftflow":
        if modality is not None:
            raise ValueError("--modality is for --data nyud")
        two = segmenter is not None and "geometric" in tuple(getattr(segmenter, "heads", ()) or ())
        return data.SIFTFlow(root, split=split, target="both" if two else "semantic")
    if modality is None:
        wants_hha = segmenter is not None and "hha" in tuple(
            getattr(segmenter, "input_names", ()) or ())
        modality = "rgbhha" if wants_hha else "rgb"
    return data.NYUDv2(root, split=split, modality=modality)

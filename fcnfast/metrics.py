"""Segmentation scores exactly as the paper's ``score.py`` computes them.

Everything goes through the confusion histogram ``hist[gt, pred]`` over the pixels whose ground
truth is a real class (0 <= gt < n_classes; 255 = ignore). From it:

- pixel accuracy  = sum(diag) / sum(hist)
- mean accuracy   = nanmean(diag / row sums)
- mean IU         = nanmean(diag / (row + col - diag))
- f.w. IU         = sum over classes with freq > 0 of freq * IU, freq = row / sum(hist)

A class absent from both the ground truth and the prediction has IU 0/0 = nan and is left out of
the means, as ``np.nanmean`` does in ``score.py``. A class only predicted (never in the ground
truth) has IU 0 and counts.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["confusion", "scores_from_confusion", "segmentation_scores", "ConfusionMeter"]


def _check_n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise TypeError(f"n_classes must be an integer, got {type(n_classes).__name__}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    return int(n_classes)


def _check_ignore_index(ignore_index) -> int | None:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an integer or None, got {type(ignore_index).__name__}")
    return int(ignore_index)


def _integer_array(x, name: str) -> np.ndarray:
    """A numpy view of an integer label array or tensor (any integer dtype, any shape)."""
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")
        # Not every torch integer dtype has a numpy twin (uint16/32/64 in older numpy bridges).
        return x.detach().to("cpu", torch.int64).numpy()
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")
        return x
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def confusion(gt, pred, n_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """The (n_classes, n_classes) int64 histogram ``hist[gt, pred]`` of ``score.py``'s ``fast_hist``.

    ``gt`` and ``pred`` are integer numpy arrays or torch tensors of the same shape (one image,
    a batch, anything). Pixels whose ``gt`` equals ``ignore_index`` or lies outside
    ``[0, n_classes)`` are dropped; at the kept pixels ``pred`` must lie in ``[0, n_classes)``
    (what it holds at dropped pixels does not matter).
    """
    n = _check_n_classes(n_classes)
    ignore = _check_ignore_index(ignore_index)
    gt = _integer_array(gt, "gt")
    pred = _integer_array(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(
            f"gt and pred must have the same shape, got gt {gt.shape} and pred {pred.shape}")

    keep = (gt >= 0) & (gt < n)
    if ignore is not None and 0 <= ignore < n:
        # An in-range ignore label is still dropped; an out-of-range one already is.
        keep &= gt != ignore
    gt_kept = gt[keep].astype(np.int64, copy=False)
    pred_kept = pred[keep].astype(np.int64, copy=False)
    if pred_kept.size and (pred_kept.min() < 0 or pred_kept.max() >= n):
        bad = pred_kept[(pred_kept < 0) | (pred_kept >= n)]
        raise ValueError(
            f"pred must lie in [0, {n}) where gt is a class; {bad.size} pixels do not "
            f"(values {np.unique(bad)[:8].tolist()})")
    return np.bincount(n * gt_kept + pred_kept, minlength=n * n).reshape(n, n)


def scores_from_confusion(hist) -> dict:
    """``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fwavacc`` (floats) and ``per_class_iu`` (array).

    Classes absent from ground truth and prediction give nan IU and are skipped by the means; an
    empty histogram gives nan for every score.
    """
    if isinstance(hist, torch.Tensor):
        hist = hist.detach().cpu().numpy()
    if not isinstance(hist, np.ndarray):
        raise TypeError(f"hist must be a numpy array or a torch tensor, got {type(hist).__name__}")
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"hist must be a square 2-D array, got shape {hist.shape}")
    if hist.dtype.kind not in "iuf":
        raise TypeError(f"hist must hold numbers, got dtype {hist.dtype}")
    hist = hist.astype(np.float64)
    if np.any(hist < 0):
        raise ValueError("hist must not hold negative counts")

    diag = np.diag(hist)
    rows = hist.sum(axis=1)  # ground-truth pixels per class
    cols = hist.sum(axis=0)  # predicted pixels per class
    total = hist.sum()
    # 0/0 is the "absent class" nan that the means skip; silence numpy's warnings about it.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-nan: "Mean of empty slice"
        pixel_acc = diag.sum() / total
        mean_acc = np.nanmean(diag / rows)
        iu = diag / (rows + cols - diag)
        mean_iu = np.nanmean(iu)
        freq = rows / total
    present = freq > 0
    fwavacc = (freq[present] * iu[present]).sum() if total > 0 else np.nan
    return {
        "pixel_acc": float(pixel_acc),
        "mean_acc": float(mean_acc),
        "mean_iu": float(mean_iu),
        "fwavacc": float(fwavacc),
        "per_class_iu": iu,
    }


def segmentation_scores(gt, pred, n_classes: int, ignore_index: int | None = 255) -> dict:
    """The scores of :func:`scores_from_confusion` for one call's worth of pixels."""
    return scores_from_confusion(confusion(gt, pred, n_classes, ignore_index))


class ConfusionMeter:
    """Accumulates the confusion histogram image by image (or batch by batch), so a dataset can be
    scored without holding its predictions in memory. Scores of the sum equal scores of one big
    :func:`confusion` call, as in ``score.py``'s loop over the validation set."""

    def __init__(self, n_classes: int, ignore_index: int | None = 255):
        self.n_classes = _check_n_classes(n_classes)
        self.ignore_index = _check_ignore_index(ignore_index)
        self._hist = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def update(self, gt, pred) -> "ConfusionMeter":
        """Add the pixels of ``gt``/``pred`` (same rules as :func:`confusion`)."""
        self._hist += confusion(gt, pred, self.n_classes, self.ignore_index)
        return self

    @property
    def hist(self) -> np.ndarray:
        """A copy of the accumulated int64 histogram ``hist[gt, pred]``."""
        return self._hist.copy()

    def scores(self) -> dict:
        return scores_from_confusion(self._hist)

    def reset(self) -> None:
        self._hist[...] = 0

    def __repr__(self) -> str:
        return (f"ConfusionMeter(n_classes={self.n_classes}, ignore_index={self.ignore_index}, "
                f"pixels={int(self._hist.sum())})")

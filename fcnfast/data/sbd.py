"""SBD (Hariharan et al., "Semantic Contours from Inverse Detectors"): the extra VOC segmentation
annotations the FCN paper trains on.

Layout of the release (``benchmark_RELEASE/dataset``)::

    dataset/img/<id>.jpg
    dataset/cls/<id>.mat      GTcls.Segmentation: H×W class indices 0..20
    dataset/train.txt, dataset/val.txt

The official FCN ``voc_layers.py`` (``SBDDSegDataLayer``) reads the same files:
``loadmat(.../cls/<id>.mat)['GTcls'][0]['Segmentation'][0]``.
"""
from __future__ import annotations

import os

import numpy as np

from ..palette import VOC_CLASSES
from .folder import (SegmentationFiles, check_label_range, check_same_size,
                     check_split_name, load_mat_field, read_rgb, read_split, require_dir)

SBD_SPLITS = ("train", "val")


def resolve_sbd_dir(root: str) -> str:
    """The ``dataset`` folder: ``root/dataset``, ``root/benchmark_RELEASE/dataset`` or ``root``."""
    root = os.fspath(root)
    require_dir(root, "SBD root")
    for candidate in (os.path.join(root, "dataset"),
                      os.path.join(root, "benchmark_RELEASE", "dataset"), root):
        if os.path.isdir(os.path.join(candidate, "img")) and os.path.isdir(os.path.join(candidate, "cls")):
            return candidate
    raise FileNotFoundError(
        f"SBD dataset not found under {root!r}: expected 'img/' and 'cls/' in {root!r}, "
        f"{os.path.join(root, 'dataset')!r} or {os.path.join(root, 'benchmark_RELEASE', 'dataset')!r}")


def sbd_split_ids(root: str, split: str = "train") -> list:
    """The ids listed in SBD's ``<split>.txt`` (used to compute VOC's seg11valid)."""
    return read_split(resolve_sbd_dir(root), check_split_name(split), "SBD")


def read_sbd_labels(path: str) -> np.ndarray:
    """The H×W uint8 class map in ``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file."""
    gtcls = load_mat_field(path, "GTcls", "SBD label file")
    segmentation = getattr(gtcls, "Segmentation", None)
    if segmentation is None:
        raise ValueError(
            f"SBD label file {path!r}: GTcls has no field 'Segmentation' (is it a cls/ file, "
            f"not an inst/ one?)")
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.integer):
        raise ValueError(
            f"SBD label file {path!r}: GTcls.Segmentation must be a 2-D integer array, got shape "
            f"{segmentation.shape} dtype {segmentation.dtype}")
    if segmentation.min(initial=0) < 0 or segmentation.max(initial=0) > 255:
        raise ValueError(f"SBD label file {path!r}: GTcls.Segmentation holds values outside 0..255")
    return segmentation.astype(np.uint8)


class SBDSegmentation(SegmentationFiles):
    """SBD images with their class maps: 21 VOC classes; SBD has no 255 border, so nothing is ignored.

    ``root`` may be the folder holding ``dataset/`` (or ``benchmark_RELEASE/dataset``) or the
    ``dataset`` folder itself. Needs scipy for the ``.mat`` labels.
    """

    classes = VOC_CLASSES

    def __init__(self, root: str, split: str = "train"):
        if split not in SBD_SPLITS:
            raise ValueError(f"SBD split must be one of {SBD_SPLITS}, got {split!r}")
        self.root = resolve_sbd_dir(root)
        self.split = split
        self.ids = read_split(self.root, split, "SBD")

    def load(self, sample_id: str):
        image_path = os.path.join(self.root, "img", f"{sample_id}.jpg")
        label_path = os.path.join(self.root, "cls", f"{sample_id}.mat")
        image = read_rgb(image_path, "SBD image")
        labels = read_sbd_labels(label_path)
        check_same_size(image, labels, image_path, label_path)
        check_label_range(labels, len(self.classes), label_path)
        return image, labels

"""PASCAL VOC 2011/2012 segmentation, and the paper's evaluation subset ``seg11valid``.

Layout of the devkit::

    VOC20xx/JPEGImages/<id>.jpg
    VOC20xx/SegmentationClass/<id>.png              palette PNG: indices 0..20, 255 = border
    VOC20xx/ImageSets/Segmentation/<split>.txt      train, val, trainval

as the official FCN ``voc_layers.py`` (``VOCSegDataLayer``) and pytorch-fcn's
``torchfcn/datasets/voc.py`` read it.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

from ..palette import VOC_CLASSES
from .folder import (SegmentationFiles, check_label_range, check_same_size, read_index_png,
                     read_rgb, read_split_ids, require_dir)
from .sbd import sbd_split_ids

VOC_YEARS = ("2011", "2012")
VOC_SPLITS = ("train", "val", "trainval", "seg11valid")


def seg11valid_ids(voc_val_ids: Iterable[str], sbd_train_ids: Iterable[str]) -> list:
    """The VOC val ids that are not in SBD's training split, in VOC's order.

    The FCN paper trains on SBD train and evaluates on this subset of VOC2011 val (736 images in the
    official ``data/pascal/seg11valid.txt``): SBD's training images include part of VOC val, so
    scoring on all of val would score images the network was trained on.
    """
    train = set(sbd_train_ids)
    return [i for i in voc_val_ids if i not in train]


def resolve_voc_dir(root: str, year: str) -> str:
    """The ``VOC20xx`` folder: ``root/VOC20xx``, ``root/VOCdevkit/VOC20xx`` or ``root`` itself."""
    root = os.fspath(root)
    require_dir(root, "VOC root")
    for candidate in (os.path.join(root, f"VOC{year}"),
                      os.path.join(root, "VOCdevkit", f"VOC{year}"), root):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise FileNotFoundError(
        f"VOC{year} not found under {root!r}: expected a 'JPEGImages' folder in "
        f"{os.path.join(root, f'VOC{year}')!r}, {os.path.join(root, 'VOCdevkit', f'VOC{year}')!r} "
        f"or {root!r}")


class VOCSegmentation(SegmentationFiles):
    """VOC segmentation images with their palette-PNG class maps (21 classes, 255 = ignore).

    ``root`` may hold ``VOC2011/`` (or ``VOCdevkit/VOC2011/``) or be the ``VOC2011`` folder.

    ``split="seg11valid"`` is the paper's evaluation set: VOC val minus SBD train (see
    ``seg11valid_ids``). Ports that train on SBD and then score all of VOC2011 val report inflated
    numbers, because some of those val images were training images. It is read from
    ``ImageSets/Segmentation/seg11valid.txt`` when that file exists (the official list), and
    otherwise computed from VOC's ``val.txt`` and SBD's ``train.txt`` under ``sbd_root``. With
    ``year="2012"`` the same rule gives VOC2012 val minus SBD train.
    """

    classes = VOC_CLASSES

    def __init__(self, root: str, split: str = "train", year: str = "2011",
                 sbd_root: Optional[str] = None):
        year = str(year)
        if year not in VOC_YEARS:
            raise ValueError(f"VOC year must be one of {VOC_YEARS}, got {year!r}")
        if split not in VOC_SPLITS:
            raise ValueError(f"VOC split must be one of {VOC_SPLITS}, got {split!r}")
        self.year = year
        self.split = split
        self.root = resolve_voc_dir(root, year)
        self.ids = self._read_ids(split, sbd_root)

    def _read_ids(self, split: str, sbd_root: Optional[str]) -> list:
        sets_dir = os.path.join(self.root, "ImageSets", "Segmentation")
        split_path = os.path.join(sets_dir, f"{split}.txt")
        if split != "seg11valid" or os.path.isfile(split_path):
            if not os.path.isfile(split_path):
                raise FileNotFoundError(f"VOC split file not found: {split_path!r}")
            return read_split_ids(split_path, "VOC split file")
        if sbd_root is None:
            raise FileNotFoundError(
                f"split 'seg11valid' needs either {split_path!r} (the official list) or "
                f"sbd_root= pointing at SBD, to subtract SBD's train.txt from VOC's val.txt")
        val_path = os.path.join(sets_dir, "val.txt")
        if not os.path.isfile(val_path):
            raise FileNotFoundError(f"VOC split file not found: {val_path!r} (needed for seg11valid)")
        return seg11valid_ids(read_split_ids(val_path, "VOC split file"),
                              sbd_split_ids(sbd_root, "train"))

    def load(self, sample_id: str):
        image_path = os.path.join(self.root, "JPEGImages", f"{sample_id}.jpg")
        label_path = os.path.join(self.root, "SegmentationClass", f"{sample_id}.png")
        image = read_rgb(image_path, "VOC image")
        labels = read_index_png(label_path, modes=("P",), what="VOC label")
        check_same_size(image, labels, image_path, label_path)
        check_label_range(labels, len(self.classes), label_path)
        return image, labels

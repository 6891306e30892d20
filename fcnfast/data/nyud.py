"""NYUDv2 with the 40-class task of Gupta et al. (ECCV 2014), as the FCN paper uses it.

Layout, as the official FCN ``nyud_layers.py`` reads it::

    <root>/<split>.txt                  train, val, test
    <root>/data/images/img_<id>.png     RGB
    <root>/data/hha/img_<id>.png        HHA (Gupta's ``saveHHA.m``; see ``fcnfast.data.hha``)
    <root>/segmentation/img_<id>.mat    variable ``segmentation``: 0 = void, 1..40 = classes

``nyud_layers.py::load_label`` reads ``segmentation`` as uint8 and subtracts 1, so void becomes 255
and the classes 0..39; we do the same and refuse values above 40.
"""
from __future__ import annotations

import os

import numpy as np

from .folder import (SegmentationFiles, check_same_size, check_split_name,
                     load_mat_field, read_rgb, read_split, require_dir, shift_labels)

# data/nyud/classes.txt of the FCN release (which spells "refridgerator").
NYUD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)

NYUD_MODALITIES = ("rgb", "hha", "rgbhha")


class NYUDv2(SegmentationFiles):
    """NYUDv2 images with 40-class labels (255 = void).

    ``modality`` picks the input: ``"rgb"`` (H×W×3), ``"hha"`` (the H×W×3 HHA encoding of depth)
    or ``"rgbhha"`` (H×W×6: RGB channels then HHA channels, for a single early-fusion input; the
    paper's late-fusion RGB-HHA net takes the two halves apart). Needs scipy for the labels.
    """

    classes = NYUD_CLASSES

    def __init__(self, root: str, split: str = "train", modality: str = "rgb"):
        if modality not in NYUD_MODALITIES:
            raise ValueError(f"NYUDv2 modality must be one of {NYUD_MODALITIES}, got {modality!r}")
        self.root = require_dir(os.fspath(root), "NYUDv2 root")
        self.split = check_split_name(split)
        self.modality = modality
        self.ids = read_split(self.root, split, "NYUDv2")

    def load(self, sample_id: str):
        label_path = os.path.join(self.root, "segmentation", f"img_{sample_id}.mat")
        inputs = []
        if self.modality in ("rgb", "rgbhha"):
            inputs.append(self._read(os.path.join("data", "images"), sample_id, "NYUDv2 image"))
        if self.modality in ("hha", "rgbhha"):
            inputs.append(self._read(os.path.join("data", "hha"), sample_id, "NYUDv2 HHA image"))
        labels = shift_labels(load_mat_field(label_path, "segmentation", "NYUDv2 label file"),
                              len(self.classes), (0,), label_path)
        for path, pixels in inputs:
            check_same_size(pixels, labels, path, label_path)
        image = inputs[0][1] if len(inputs) == 1 else np.concatenate([p for _, p in inputs], axis=2)
        return image, labels

    def _read(self, folder: str, sample_id: str, what: str):
        path = os.path.join(self.root, folder, f"img_{sample_id}.png")
        return path, read_rgb(path, what)

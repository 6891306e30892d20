"""SIFT Flow (Liu, Yuen, Torralba): 2,688 outdoor scenes with 33 semantic and 3 geometric classes.

Layout, as the official FCN ``siftflow_layers.py`` reads it::

    <root>/<split>.txt                                                   (trainval, test, ...)
    <root>/Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg
    <root>/SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat   variable S
    <root>/GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat        variable S

Label rules follow ``siftflow_layers.py::load_label`` and the release's ``data/sift-flow/classes.txt``:
semantic ``S`` is 0 = void, 1..33 = classes, read as ``S - 1`` so void becomes 255; geometric ``S``
is -1 = void, 1..3 = classes, and the layer first sets -1 to 0, so both -1 and 0 become 255.
(The images ``highway_bost181`` and ``street_urb506`` have no annotation: all void.)
"""
from __future__ import annotations

import os

from .folder import (SegmentationFiles, check_same_size, check_split_name,
                     load_mat_field, read_rgb, read_split, require_dir, shift_labels)

SIFTFLOW_SEMANTIC_CLASSES = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight",
    "sun", "tree", "window",
)
SIFTFLOW_GEOMETRIC_CLASSES = ("sky", "horizontal", "vertical")

SIFTFLOW_TARGETS = ("semantic", "geometric", "both")

_CATEGORY_DIR = "spatial_envelope_256x256_static_8outdoorcategories"
_SEMANTIC_VOID = (0,)
_GEOMETRIC_VOID = (-1, 0)


class SIFTFlow(SegmentationFiles):
    """SIFT Flow scenes with semantic and/or geometric labels (255 = void).

    ``target="semantic"`` or ``"geometric"`` gives ``(image, labels)``; ``"both"`` gives
    ``(image, (semantic, geometric))``, the two heads of the paper's joint SIFT Flow net, and
    ``classes`` is then the semantic list (both lists are on ``semantic_classes`` and
    ``geometric_classes``). ``split`` names ``<root>/<split>.txt`` (the release ships ``trainval``
    and ``test``). Needs scipy for the ``.mat`` labels.
    """

    semantic_classes = SIFTFLOW_SEMANTIC_CLASSES
    geometric_classes = SIFTFLOW_GEOMETRIC_CLASSES

    def __init__(self, root: str, split: str = "trainval", target: str = "semantic"):
        if target not in SIFTFLOW_TARGETS:
            raise ValueError(f"SIFT Flow target must be one of {SIFTFLOW_TARGETS}, got {target!r}")
        self.root = require_dir(os.fspath(root), "SIFT Flow root")
        self.split = check_split_name(split)
        self.target = target
        self.classes = (SIFTFLOW_GEOMETRIC_CLASSES if target == "geometric"
                        else SIFTFLOW_SEMANTIC_CLASSES)
        self.ids = read_split(self.root, split, "SIFT Flow")

    def _path(self, folder: str, sample_id: str, ext: str) -> str:
        return os.path.join(self.root, folder, _CATEGORY_DIR, f"{sample_id}{ext}")

    def _labels(self, folder: str, sample_id: str, n_classes: int, void, image, image_path):
        path = self._path(folder, sample_id, ".mat")
        labels = shift_labels(load_mat_field(path, "S", "SIFT Flow label file"), n_classes, void, path)
        check_same_size(image, labels, image_path, path)
        return labels

    def load(self, sample_id: str):
        image_path = self._path("Images", sample_id, ".jpg")
        image = read_rgb(image_path, "SIFT Flow image")
        semantic = geometric = None
        if self.target in ("semantic", "both"):
            semantic = self._labels("SemanticLabels", sample_id, len(SIFTFLOW_SEMANTIC_CLASSES),
                                    _SEMANTIC_VOID, image, image_path)
        if self.target in ("geometric", "both"):
            geometric = self._labels("GeoLabels", sample_id, len(SIFTFLOW_GEOMETRIC_CLASSES),
                                     _GEOMETRIC_VOID, image, image_path)
        if self.target == "semantic":
            return image, semantic
        if self.target == "geometric":
            return image, geometric
        return image, (semantic, geometric)

"""Datasets for the paper's training side: readers for the layouts people have on disk and a
synthetic scene generator. Every dataset yields ``(image, labels)``: an H×W×3 uint8 RGB numpy image
and an H×W uint8 label map with 255 = ignore."""
from __future__ import annotations
from .folder import IGNORE_LABEL, ImageFolderSegmentation
from .voc import VOCSegmentation, seg11valid_ids
from .sbd import SBDSegmentation
from .siftflow import SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES, SIFTFlow
from .nyud import NYUD_CLASSES, NYUDv2
from .hha import hha_components, hha_encode
from .synthetic import SYNTHETIC_CLASSES, SyntheticScenes, synthetic_scene

"""Datasets for the paper's training side: readers for the layouts people have on disk and a
synthetic scene generator. Every dataset yields ``(image, labels)``: an H×W×3 uint8 RGB numpy image
and an H×W uint8 label map with 255 = ignore."""
from __future__ import annotations

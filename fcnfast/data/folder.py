"""Segmentation pairs read from files: the shared readers every dataset uses, and
``ImageFolderSegmentation`` for a plain folder of images beside a folder of label PNGs.

The readers raise ``FileNotFoundError`` or ``ValueError`` that name the file and what is wrong with
it, so a broken download is found at the sample that breaks, not as a shape error in the loss.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np
import torch.utils.data
from PIL import Image

IGNORE_LABEL = 255

# PIL modes whose pixel values are class indices; colour-coded RGB labels are not indices.
_INDEX_MODES = ("P", "L")


class SegmentationFiles(torch.utils.data.Dataset):
    """Base of the readers: a list of sample ids and a ``load(sample_id)`` that reads one pair.

    Subclasses set ``classes`` and ``ids`` and implement ``load``; indexing, ``len`` and the bounds
    check live here once.
    """

    classes: Tuple[str, ...] = ()
    ids: list

    def load(self, sample_id: str):
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"{type(self).__name__} index must be an integer, got {type(index).__name__}")
        n = len(self.ids)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__} index {index} out of range for {n} samples")
        return self.load(self.ids[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {len(self.classes)} classes)"


def require_dir(path: str, what: str) -> str:
    """``path`` if it is a directory, else FileNotFoundError saying which directory was expected."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path!r} is not a directory")
    return path


def require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    return path


def check_split_name(split) -> str:
    """A split is a file name stem: a non-empty string without path separators."""
    if not isinstance(split, str) or not split or os.sep in split or "/" in split:
        raise ValueError(f"split must be a plain name such as 'train', got {split!r}")
    return split


def read_split(directory: str, split: str, dataset: str) -> list:
    """The ids of ``directory/<split>.txt``; a missing file names the splits that do exist."""
    path = os.path.join(directory, f"{split}.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{dataset} split file not found: {path!r} (splits present: "
                                f"{available_splits(directory)})")
    return read_split_ids(path, f"{dataset} split file")


def read_split_ids(path: str, what: str = "split file") -> list:
    """Sample ids listed one per line (blank lines skipped, surrounding spaces stripped)."""
    require_file(path, what)
    with open(path, "r", encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"{what} {path!r} lists no sample ids")
    return ids


def available_splits(directory: str) -> list:
    """Names of the ``*.txt`` split files in ``directory``, for error messages."""
    if not os.path.isdir(directory):
        return []
    return sorted(name[:-4] for name in os.listdir(directory) if name.endswith(".txt"))


def read_rgb(path: str, what: str = "image") -> np.ndarray:
    """An H×W×3 uint8 RGB array (gray, palette and CMYK files are converted)."""
    require_file(path, what)
    with Image.open(path) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def read_index_png(path: str, modes: Sequence[str] = ("P",), what: str = "label") -> np.ndarray:
    """The H×W uint8 class indices stored in a palette (or, where allowed, grayscale) PNG.

    ``np.array`` of a mode "P" image gives the palette indices themselves, so the VOC border value
    255 stays 255. An RGB label would give colours, not classes: refuse it rather than guess.
    """
    require_file(path, what)
    with Image.open(path) as im:
        if im.mode not in modes:
            allowed = " or ".join(f"mode {m!r}" for m in modes)
            raise ValueError(
                f"{what} {path!r} has PIL mode {im.mode!r}; expected an indexed PNG ({allowed}) whose "
                f"pixel values are class indices (convert colour-coded labels to indices first)")
        return np.array(im, dtype=np.uint8)


def check_same_size(image: np.ndarray, labels: np.ndarray, image_path: str, label_path: str):
    if image.shape[:2] != labels.shape[:2]:
        raise ValueError(
            f"size mismatch: image {image_path!r} is {image.shape[0]}x{image.shape[1]} (H x W) but "
            f"labels {label_path!r} are {labels.shape[0]}x{labels.shape[1]}")


def check_label_range(labels: np.ndarray, n_classes: int, path: str):
    """Every label is a class index below ``n_classes`` or the ignore value 255."""
    bad = (labels >= n_classes) & (labels != IGNORE_LABEL)
    if bad.any():
        values = sorted(set(np.unique(labels[bad]).tolist()))
        raise ValueError(
            f"labels {path!r} hold values {values[:10]} outside 0..{n_classes - 1} and the ignore "
            f"value {IGNORE_LABEL}")


def shift_labels(raw: np.ndarray, n_classes: int, void_values: Sequence[int], path: str) -> np.ndarray:
    """Map 1-based class labels 1..n to 0..n-1 and every void value to 255.

    The official FCN data layers do this as ``label.astype(np.uint8) - 1``, which silently wraps
    anything unexpected; here any other value is an error naming the file.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ValueError(f"labels in {path!r} must be a 2-D array, got shape {raw.shape}")
    if not np.issubdtype(raw.dtype, np.number) or np.issubdtype(raw.dtype, np.complexfloating):
        raise ValueError(f"labels in {path!r} must be numeric, got dtype {raw.dtype}")
    if np.issubdtype(raw.dtype, np.floating):
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise ValueError(f"labels in {path!r} must be whole numbers")
    values = raw.astype(np.int64)
    is_class = (values >= 1) & (values <= n_classes)
    is_void = np.isin(values, list(void_values))
    bad = ~(is_class | is_void)
    if bad.any():
        found = sorted(set(np.unique(values[bad]).tolist()))
        raise ValueError(
            f"labels in {path!r} hold values {found[:10]}; expected classes 1..{n_classes} or void "
            f"{sorted(void_values)}")
    return np.where(is_class, values - 1, IGNORE_LABEL).astype(np.uint8)


def load_mat_field(path: str, field: str, what: str = "label file"):
    """One variable of a MATLAB ``.mat`` file, loaded as the official readers see it.

    ``squeeze_me=True, struct_as_record=False`` turns 1×1 structs into objects with attributes
    (``GTcls.Segmentation``) and drops MATLAB's singleton dimensions. scipy is imported here only,
    so the readers that need no ``.mat`` file work without it.
    """
    require_file(path, what)
    try:
        import scipy.io
    except ImportError as exc:
        raise ImportError(
            f"reading {path!r} needs scipy (for MATLAB .mat files): pip install scipy "
            f"(or pip install 'fcnfast[test]')") from exc
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for damaged files
        raise ValueError(f"{what} {path!r} is not a readable MATLAB .mat file: {exc}") from exc
    if field not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{what} {path!r} has no variable {field!r} (it has {names})")
    return mat[field]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff")


def _files_by_stem(directory: str, suffixes: Sequence[str], what: str) -> dict:
    by_stem = {}
    for name in sorted(os.listdir(directory)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in suffixes or not os.path.isfile(os.path.join(directory, name)):
            continue
        if stem in by_stem:
            raise ValueError(
                f"{what} directory {directory!r} holds two files for {stem!r}: {by_stem[stem]!r} "
                f"and {name!r}")
        by_stem[stem] = name
    return by_stem


class ImageFolderSegmentation(SegmentationFiles):
    """Images in one folder, label PNGs (palette or grayscale) in another, paired by file stem.

    ``images_dir/cat.jpg`` pairs with ``labels_dir/cat.png``; ids are the stems, sorted. A file
    without its partner is an error listing every unpaired name, since a silently shorter dataset
    hides a broken copy. ``classes`` (names) enables a check that labels lie in
    ``0..len(classes)-1`` or are 255; without it ``classes`` is empty and values are not checked.
    """

    def __init__(self, images_dir: str, labels_dir: str, classes: Optional[Sequence[str]] = None,
                 image_suffixes: Sequence[str] = IMAGE_SUFFIXES, label_suffix: str = ".png"):
        self.images_dir = require_dir(os.fspath(images_dir), "images directory")
        self.labels_dir = require_dir(os.fspath(labels_dir), "labels directory")
        if isinstance(image_suffixes, str):
            image_suffixes = (image_suffixes,)
        image_suffixes = tuple(s.lower() for s in image_suffixes)
        self.classes = tuple(classes) if classes is not None else ()
        images = _files_by_stem(self.images_dir, image_suffixes, "images")
        labels = _files_by_stem(self.labels_dir, (label_suffix.lower(),), "labels")
        unpaired_images = sorted(images[s] for s in images.keys() - labels.keys())
        unpaired_labels = sorted(labels[s] for s in labels.keys() - images.keys())
        if unpaired_images or unpaired_labels:
            raise ValueError(
                f"unpaired files: images without a label in {self.labels_dir!r}: {unpaired_images}; "
                f"labels without an image in {self.images_dir!r}: {unpaired_labels}")
        if not images:
            raise ValueError(
                f"no images with suffixes {list(image_suffixes)} in {self.images_dir!r}")
        self.ids = sorted(images)
        self._images = images
        self._labels = labels

    def load(self, sample_id: str):
        image_path = os.path.join(self.images_dir, self._images[sample_id])
        label_path = os.path.join(self.labels_dir, self._labels[sample_id])
        image = read_rgb(image_path)
        labels = read_index_png(label_path, modes=_INDEX_MODES)
        check_same_size(image, labels, image_path, label_path)
        if self.classes:
            check_label_range(labels, len(self.classes), label_path)
        return image, labels

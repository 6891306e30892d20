"""Datasets by name, for the command line: "synthetic" or a reader of ``fcnfast.data`` on a root."""
from __future__ import annotations

import os
from typing import Optional, Tuple

DATASETS = ("synthetic", "voc", "sbd", "siftflow", "nyud", "folder")
# (train split, validation split) each reader uses by default: the paper's protocols.
DEFAULT_SPLITS = {
    "voc": ("train", "seg11valid"),
    "sbd": ("train", "val"),
    "siftflow": ("trainval", "test"),
    "nyud": ("train", "test"),
}


def open_dataset(name: str, root: Optional[str] = None, split: Optional[str] = None, *,
                 val: bool = False, synthetic_count: int = 200, synthetic_size=(128, 128),
                 seed: int = 0):
    """The dataset ``name`` (one of ``DATASETS``) for training, or for validation with ``val``.

    "synthetic" needs no root: ``synthetic_count`` generated scenes (validation uses another seed,
    so its scenes are held out). "folder" reads ``root/images`` beside ``root/labels`` (or
    ``root/<split>/images`` and ``root/<split>/labels`` when a split is given).
    """
    if name not in DATASETS:
        raise ValueError(f"data must be one of {', '.join(DATASETS)}; got {name!r}")
    if name == "synthetic":
        from ..data.synthetic import SyntheticScenes

        # Training scenes come from seed, held-out ones from a disjoint seed.
        return SyntheticScenes(synthetic_count, size=tuple(synthetic_size),
                               seed=seed * 2 + (1 if val else 0))
    if root is None:
        raise ValueError(f"data={name!r} needs a root folder")
    if name == "folder":
        from ..data.folder import ImageFolderSegmentation

        base = os.path.join(root, split) if split else root
        return ImageFolderSegmentation(os.path.join(base, "images"), os.path.join(base, "labels"))
    split = split or DEFAULT_SPLITS[name][1 if val else 0]
    from .. import data

    readers = {"voc": data.VOCSegmentation, "sbd": data.SBDSegmentation,
               "siftflow": data.SIFTFlow, "nyud": data.NYUDv2}
    return readers[name](root, split=split)


def default_splits(name: str) -> Tuple[Optional[str], Optional[str]]:
    return DEFAULT_SPLITS.get(name, (None, None))

"""Datasets as the training loop eats them: checked, augmented, as tensors, in a resumable order.

Every dataset of ``fcnfast.data`` yields (H×W×3 uint8 RGB numpy, H×W uint8 labels). Here each
sample is augmented from a generator seeded by (seed, epoch, index), so a resumed run sees exactly
the samples an uninterrupted one would; normalisation to the net's input convention happens later,
on the device (``images.to_network_input``).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from .augment import augment_pair


def check_pair(item, index: int):
    """(image, labels) numpy arrays of one sample, or TypeError/ValueError saying what is wrong."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise TypeError(f"sample {index}: a dataset must yield (image, labels) pairs, "
                        f"got {type(item).__name__}")
    image, labels = (np.asarray(a) for a in item)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"sample {index}: image must be H×W×3 uint8, got {image.shape} {image.dtype}")
    if labels.shape != image.shape[:2] or labels.dtype.kind not in "iu":
        raise ValueError(f"sample {index}: labels must be an H×W integer map matching the image "
                         f"{image.shape[:2]}, got {labels.shape} {labels.dtype}")
    return image, labels


class TrainPairs(Dataset):
    """``dataset`` augmented per ``config``; yields (H×W×3 uint8 tensor, H×W int64 tensor)."""

    def __init__(self, dataset, config, seed: int = 0):
        self.dataset = dataset
        self.config = config
        self.seed = seed
        self.epoch = 0  # set by the loop before each pass: part of every sample's seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, labels = check_pair(self.dataset[index], index)
        c = self.config
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        image, labels = augment_pair(image, labels, rng, flip=c.flip, scale_jitter=c.scale_jitter,
                                     crop_size=c.crop_size, ignore_index=c.ignore_index)
        return torch.from_numpy(image), torch.from_numpy(labels.astype(np.int64))


def collate_pairs(batch):
    sizes = {tuple(labels.shape) for _, labels in batch}
    if len(sizes) > 1:
        raise ValueError(f"batch_size > 1 needs samples of one size, got {sorted(sizes)}: "
                         "set crop_size (random crops) or use batch_size=1")
    images, labels = zip(*batch)
    return torch.stack(images), torch.stack(labels)


class SkipSampler(Sampler):
    """The indices of ``sampler`` after the first ``skip``: where a resumed epoch picks up."""

    def __init__(self, sampler: Sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self):
        return max(len(self.sampler) - self.skip, 0)


def shard_sampler(dataset, rank: int, world_size: int, seed: int) -> DistributedSampler:
    """Shuffled, sharded order (one shard per rank; a single process is the 1-shard case)."""
    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)

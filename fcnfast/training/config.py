"""The training recipe as one dataclass, with the paper's settings as defaults.

Long, Shelhamer & Darrell: SGD with momentum 0.99, batch 1 ("online"), weight decay 5e-4 on the
weights only, biases at twice the learning rate, and either the unnormalised pixel-loss sum at
lr 1e-10 (the released VOC nets) or the per-pixel mean at lr 1e-4. Deconvolutions start bilinear and
stay fixed in the released nets.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

# lr the paper pairs with each loss normalisation.
PAPER_LR_NORMALIZED = 1e-4
PAPER_LR_UNNORMALIZED = 1e-10

UPSAMPLING_MODES = ("fixed", "learn_2x", "learn")
LR_POLICIES = ("fixed", "poly")
OPTIMIZERS = ("sgd", "adam")
AMP_DTYPES = ("bf16", "fp16")


def _pair(value, name: str) -> Optional[Tuple]:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or a pair, got {value!r}") from None
    return (a, b)


@dataclass
class TrainConfig:
    # -- optimisation (the paper's defaults) --
    iterations: int = 1000
    batch_size: int = 1
    optimizer: str = "sgd"  # "sgd" (the paper); "adam" for nets trained from scratch in a hurry
    lr: Optional[float] = None  # None: 1e-4 with the normalised loss, 1e-10 with the summed one
    momentum: float = 0.99
    weight_decay: float = 5e-4  # on weights; biases get none, as in the released nets
    bias_lr_mult: float = 2.0
    lr_policy: str = "fixed"  # "fixed" (the paper) or "poly" (lr * (1 - it/iterations) ** 0.9)
    normalize_loss: bool = True  # mean over labelled pixels; False: the released nets' sum
    ignore_index: int = 255
    class_weights: Optional[Sequence[float]] = None  # class balancing by loss weights
    loss_sample_drop: float = 0.0  # fraction of pixel losses dropped at random (patchwise training)
    upsampling: str = "fixed"  # deconvolutions: "fixed" (released nets), "learn_2x" (paper), "learn"
    # -- augmentation --
    flip: bool = False
    scale_jitter: Optional[Tuple[float, float]] = None  # random rescale factor range
    crop_size: Optional[Tuple[int, int]] = None  # random (h, w) crops; needed for batch_size > 1
    # -- validation, logs, checkpoints --
    val_every: int = 0  # iterations between validations; 0: only at the end
    val_limit: Optional[int] = None  # validate on the first N samples only
    log_every: int = 10
    checkpoint_every: int = 0  # iterations between resumable checkpoints; 0: only at the end
    progress: bool = True  # tqdm bar on rank 0
    # -- execution --
    seed: int = 0
    device: Optional[str] = None  # default: cuda:LOCAL_RANK when available, else cpu
    amp: Optional[str] = None  # "bf16" or "fp16" autocast (GPU only)
    num_workers: int = 0

    def __post_init__(self):
        for name in ("iterations", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_every", "log_every", "checkpoint_every", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0 or self.bias_lr_mult < 0:
            raise ValueError("weight_decay and bias_lr_mult must be >= 0")
        if not 0 <= self.loss_sample_drop < 1:
            raise ValueError(f"loss_sample_drop must be in [0, 1), got {self.loss_sample_drop}")
        if self.upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {self.upsampling!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_policy not in LR_POLICIES:
            raise ValueError(f"lr_policy must be one of {LR_POLICIES}, got {self.lr_policy!r}")
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be None or one of {AMP_DTYPES}, got {self.amp!r}")
        self.scale_jitter = _pair(self.scale_jitter, "scale_jitter")
        if self.scale_jitter is not None and not 0 < self.scale_jitter[0] <= self.scale_jitter[1]:
            raise ValueError(f"scale_jitter must be (low, high) with 0 < low <= high, "
                             f"got {self.scale_jitter}")
        self.crop_size = _pair(self.crop_size, "crop_size")
        if self.crop_size is not None:
            self.crop_size = tuple(int(s) for s in self.crop_size)
            if min(self.crop_size) < 1:
                raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
            if any(w < 0 for w in self.class_weights):
                raise ValueError("class_weights must be >= 0")

    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return PAPER_LR_NORMALIZED if self.normalize_loss else PAPER_LR_UNNORMALIZED

    def to_dict(self) -> dict:
        """Plain values only (lists, not tuples): fits JSON logs and weights_only checkpoints."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def replace(self, **changes) -> "TrainConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

"""One training stage: SGD on the pixel loss, validation every N iterations, resumable checkpoints,
logs and a progress bar; data-parallel when launched by torchrun.

Every iteration's randomness (data order, augmentation, dropout, loss sampling) is a function of
(seed, iteration, rank), so a run resumed from a checkpoint continues exactly as the uninterrupted
run would have. The loop reseeds torch's global generator each iteration for that.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from ..images import to_network_input
from ..models import FCNBase
from . import distributed
from .resume import TRAIN_CHECKPOINT, load_train_state, restore, save_train_state
from .config import TrainConfig
from .samples import SkipSampler, TrainPairs, collate_pairs, shard_sampler
from .logs import TrainLog
from .loss import drop_losses, segmentation_loss
from .optim import make_optimizer, set_lr, set_upsampling_trainable
from .validate import autocast, evaluate

FINAL_WEIGHTS = "model.safetensors"


@dataclass
class TrainResult:
    model: FCNBase  # the trained net, in eval mode
    arch: str
    iterations: int
    scores: Optional[dict]  # the last validation (None without a validation set)
    history: List[dict] = field(default_factory=list)  # every validation
    out_dir: Optional[str] = None
    seconds: float = 0.0

    @property
    def mean_iu(self) -> Optional[float]:
        return None if self.scores is None else self.scores["mean_iu"]


def step_seed(seed: int, iteration: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, iteration, rank]).generate_state(1)[0])


def _check_amp(amp: Optional[str], device: torch.device):
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device (float16 autocast is a GPU feature); "
                         "use amp='bf16' or none on the CPU")


def _class_names(names: Optional[Sequence[str]], model: FCNBase):
    return list(names) if names is not None and len(names) == model.num_classes else None


def _resume_path(resume: Union[bool, str, os.PathLike], out_dir: Optional[str]) -> Optional[str]:
    """The checkpoint to resume from: an explicit path, or out_dir's when ``resume`` is True and
    it exists (a first run with resume=True just starts)."""
    if resume is False or resume is None:
        return None
    if resume is True:
        path = os.path.join(out_dir, TRAIN_CHECKPOINT) if out_dir else None
        return path if path and os.path.exists(path) else None
    path = os.fspath(resume)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume: no checkpoint at {path}")
    return path


def fit(model: FCNBase, train_set, val_set=None, config: Optional[TrainConfig] = None, *,
        out_dir: Optional[str] = None, resume: Union[bool, str] = False,
        class_names: Optional[Sequence[str]] = None, stage: Optional[str] = None) -> TrainResult:
    """Train ``model`` on ``train_set`` for ``config.iterations`` iterations.

    ``train_set``/``val_set`` yield (H×W×3 uint8 RGB, H×W uint8 labels) numpy pairs (every
    ``fcnfast.data`` dataset does). With ``out_dir``, rank 0 writes train/val logs, a resumable
    ``checkpoint.pt`` and the final weights ``model.safetensors`` (fcnfast's format, with
    ``class_names``). ``resume``: True continues from ``out_dir``'s checkpoint if there is one, a
    path from that file.
    """
    if not isinstance(model, FCNBase):
        raise TypeError(f"model must be an fcnfast reference model, got {type(model).__name__}")
    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if len(train_set) == 0:
        raise ValueError("train_set is empty")
    stage = stage or model.arch
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = distributed.pick_device(config.device, local_rank)
    _check_amp(config.amp, device)
    d = distributed.init_from_env(device.type)
    try:
        return _fit(model, train_set, val_set, config, d, device, out_dir, resume, class_names, stage)
    finally:
        d.close()


def _fit(model, train_set, val_set, config, d, device, out_dir, resume, class_names, stage):
    model.to(device)
    set_upsampling_trainable(model, config.upsampling)
    model.train()
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    resume_from = _resume_path(resume, out_dir)
    start = 0
    if resume_from is not None:
        start = restore(load_train_state(resume_from), model=model, optimizer=optimizer,
                        scaler=scaler)
    if out_dir is not None and d.is_main:
        os.makedirs(out_dir, exist_ok=True)
    net = distributed.wrap(model, d, device)
    weights = (torch.tensor(config.class_weights, device=device)
               if config.class_weights is not None else None)
    if weights is not None and len(weights) != model.num_classes:
        raise ValueError(f"class_weights has {len(weights)} entries for {model.num_classes} classes")

    pairs = TrainPairs(train_set, config, seed=config.seed)
    sampler = shard_sampler(pairs, d.rank, d.world_size, config.seed)
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    log = TrainLog(out_dir, stage, config.to_dict(), enabled=d.is_main, start_iteration=start)
    history = list(log.record["validations"])
    scores = None
    bar = tqdm(total=config.iterations, initial=start, desc=stage, dynamic_ncols=True,
               disable=not (config.progress and d.is_main))
    t0 = time.perf_counter()
    it = start
    epoch, skip = divmod(start, steps_per_epoch)
    smoothed = None
    while it < config.iterations:
        sampler.set_epoch(epoch)
        pairs.epoch = epoch
        loader = DataLoader(pairs, batch_size=config.batch_size,
                            sampler=SkipSampler(sampler, skip * config.batch_size),
                            collate_fn=collate_pairs, num_workers=config.num_workers)
        for images, labels in loader:
            lr = set_lr(optimizer, config.base_lr, it, config.iterations, config.lr_policy)
            torch.manual_seed(step_seed(config.seed, it, d.rank))
            loss = _step(net, model, optimizer, scaler, images, labels, weights, config, device)
            it += 1
            smoothed = loss if smoothed is None else 0.9 * smoothed + 0.1 * loss
            if d.is_main and (it % max(config.log_every, 1) == 0 or it == config.iterations):
                log.train(it, loss, lr, time.perf_counter() - t0)
            if val_set is not None and (it == config.iterations
                                        or (config.val_every and it % config.val_every == 0)):
                scores = _validate(model, val_set, config, d, device, log, it, t0, history)
            if out_dir is not None and (it == config.iterations
                                        or (config.checkpoint_every
                                            and it % config.checkpoint_every == 0)):
                if d.is_main:
                    save_train_state(os.path.join(out_dir, TRAIN_CHECKPOINT), model=model,
                                     optimizer=optimizer, iteration=it, config=config.to_dict(),
                                     scaler=scaler)
                d.barrier()
            bar.update(1)
            postfix = {"loss": f"{smoothed:.4g}"}
            if scores is not None:
                postfix["mean_iu"] = f"{scores['mean_iu']:.3f}"
            bar.set_postfix(postfix, refresh=False)
            if it >= config.iterations:
                break
        epoch, skip = epoch + 1, 0
    bar.close()
    model.eval()
    seconds = time.perf_counter() - t0
    if out_dir is not None and d.is_main:
        ckpt.save_native(model, os.path.join(out_dir, FINAL_WEIGHTS),
                         class_names=_class_names(class_names, model))
        log.final({"iterations": it, "seconds": seconds,
                   "scores": None if scores is None else {k: v for k, v in scores.items()
                                                          if k != "per_class_iu"}})
    d.barrier()
    return TrainResult(model, model.arch, it, scores, history, out_dir, seconds)


def _step(net, model, optimizer, scaler, images, labels, weights, config, device) -> float:
    x = to_network_input(images, model.input_convention, device, torch.float32)
    labels = labels.to(device, non_blocking=True)
    labels = drop_losses(labels, config.loss_sample_drop, config.ignore_index)
    with autocast(device, config.amp):
        scores = net(x)
    loss = segmentation_loss(scores, labels, normalize=config.normalize_loss,
                             ignore_index=config.ignore_index, class_weights=weights)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss is {loss.item()}: lower lr (now {config.base_lr:g}) or "
                                 "use normalize_loss=True")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _validate(model, val_set, config, d, device, log, it, t0, history):
    """Rank 0 scores the whole validation set; the other ranks wait for it."""
    scores = None
    if d.is_main:
        scores = evaluate(model, val_set, device=device, ignore_index=config.ignore_index,
                          limit=config.val_limit, amp=config.amp)
        log.val(it, scores, time.perf_counter() - t0)
        history.append({"iteration": it, **{k: v for k, v in scores.items()
                                            if k != "per_class_iu"}})
    d.barrier()
    return scores

"""SGD as the released FCN solvers set it up.

Weights: lr × 1 with weight decay; biases: lr × ``bias_lr_mult`` (2) without decay (Caffe's
``lr_mult: 2, decay_mult: 0``). Deconvolutions keep their bilinear init and are left out of the
optimiser unless the recipe learns them: "learn_2x" learns the 2× ones (the paper's staged nets),
"learn" all of them.
"""
from __future__ import annotations

from torch import nn
from torch.optim import SGD, Adam, Optimizer

# The last, large-factor deconvolution of each net; every other deconvolution is a 2× one.
_FINAL_DECONVS = ("upscore", "upscore16", "upscore8")


def set_upsampling_trainable(model: nn.Module, mode: str) -> None:
    """Freeze or unfreeze the deconvolutions: "fixed" (all frozen), "learn_2x", "learn"."""
    if mode not in ("fixed", "learn_2x", "learn"):
        raise ValueError(f"upsampling must be 'fixed', 'learn_2x' or 'learn', got {mode!r}")
    for name, m in model.named_modules():
        if isinstance(m, nn.ConvTranspose2d):
            learn = mode == "learn" or (mode == "learn_2x" and name.split(".")[-1] not in _FINAL_DECONVS)
            for p in m.parameters():
                p.requires_grad_(learn)


def param_groups(model: nn.Module, weight_decay: float, bias_lr_mult: float):
    """Two groups, "weights" and "biases", of the trainable parameters; ``lr_mult`` on each."""
    weights, biases = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (biases if name.endswith("bias") or p.dim() == 1 else weights).append(p)
    # 1-D parameters (biases, BatchNorm scales) are not decayed, as Caffe's decay_mult 0 on biases.
    return [
        {"params": weights, "name": "weights", "lr_mult": 1.0, "weight_decay": weight_decay},
        {"params": biases, "name": "biases", "lr_mult": bias_lr_mult, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, config) -> Optimizer:
    """SGD with momentum (the paper), or Adam (betas (momentum, 0.999)) with the same groups."""
    groups = param_groups(model, config.weight_decay, config.bias_lr_mult)
    for g in groups:
        g["lr"] = config.base_lr * g["lr_mult"]
    if config.optimizer == "adam":
        return Adam(groups, lr=config.base_lr, betas=(config.momentum, 0.999))
    return SGD(groups, lr=config.base_lr, momentum=config.momentum)


def set_lr(optimizer: Optimizer, base_lr: float, iteration: int, iterations: int, policy: str) -> float:
    """Apply the lr policy for ``iteration``; returns the base lr in effect."""
    lr = base_lr if policy == "fixed" else base_lr * (1 - iteration / iterations) ** 0.9
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    return lr

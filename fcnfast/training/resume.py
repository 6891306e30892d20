"""Resumable training checkpoints: model, optimiser, grad scaler and iteration in one file.

Only tensors and plain containers go in, so ``torch.load(weights_only=True)`` reads it back — and
so does ``fcnfast.load`` (the weights sit under "model" and the net under "arch", the layout of a
trainer checkpoint it already understands).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

TRAIN_CHECKPOINT = "checkpoint.pt"


def save_train_state(path: str, *, model, optimizer, iteration: int, config: dict,
                     scaler: Optional[torch.amp.GradScaler] = None) -> None:
    state = {
        "format": "fcnfast-train",
        "arch": model.arch,
        "num_classes": model.num_classes,
        "iteration": int(iteration),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "config": config,
    }
    tmp = f"{path}.partial"
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint under the real name


def load_train_state(path: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "fcnfast-train":
        raise ValueError(f"resume: {path} is not an fcnfast training checkpoint")
    return state


def restore(state: dict, *, model, optimizer, scaler=None) -> int:
    """Load ``state`` into the model/optimiser/scaler; returns the iteration to continue from."""
    if state["arch"] != model.arch or state["num_classes"] != model.num_classes:
        raise ValueError(f"resume: the checkpoint is {state['arch']} with {state['num_classes']} "
                         f"classes, the model {model.arch} with {model.num_classes}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["iteration"])

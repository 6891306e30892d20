"""The paper's training side on the reference models: staged 32s → 16s → 8s, at-once, DDP.

``train`` is the front door (``fcnfast.train``); ``fit`` trains one model for one stage;
``TrainConfig`` holds the recipe with the paper's defaults.
"""
from __future__ import annotations

from .config import TrainConfig
from .loop import FINAL_WEIGHTS, TrainResult, fit
from .loss import drop_losses, segmentation_loss
from .optim import make_optimizer, param_groups, set_upsampling_trainable
from .stages import StagedResult, initial_model, next_stage, train, train_staged
from .validate import evaluate

__all__ = ["FINAL_WEIGHTS", "TrainConfig", "TrainResult", "StagedResult", "fit", "train", "train_staged",
           "initial_model", "next_stage", "evaluate", "segmentation_loss", "drop_losses",
           "make_optimizer", "param_groups", "set_upsampling_trainable"]

"""Validation: the four scores of ``score.py`` over a dataset, image by image at full size."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from ..images import to_network_input
from ..metrics import ConfusionMeter
from .samples import check_pair

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: Optional[str]):
    """Mixed precision on GPUs when asked; a no-op context otherwise."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp])


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, *, device=None, ignore_index: int = 255,
             limit: Optional[int] = None, amp: Optional[str] = None) -> dict:
    """pixel_acc, mean_acc, mean_iu, fwavacc and per_class_iu of ``model`` on ``dataset``.

    The model's ``input_convention`` turns the uint8 images into network input; the model is put
    in eval mode and left in the mode it came in.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    meter = ConfusionMeter(model.num_classes, ignore_index)
    was_training = model.training
    model.eval()
    try:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        for i in range(n):
            image, labels = check_pair(dataset[i], i)
            x = to_network_input(torch.from_numpy(image).unsqueeze(0), model.input_convention,
                                 device, torch.float32)
            with autocast(device, amp):
                pred = model(x).argmax(1)[0]
            meter.update(labels, pred.cpu())
    finally:
        model.train(was_training)
    return meter.scores()

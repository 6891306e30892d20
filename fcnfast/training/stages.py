"""The paper's schedules: staged FCN-32s → 16s → 8s (each stage starts from the previous one) and
FCN-8s at-once, and where the first stage's weights come from.

A first stage starts from a convolutionalised ImageNet classifier (a VGG16/AlexNet state dict the
user has: surgery reshapes its FC layers), from a trained FCN (its matching layers are copied, so
a net trained on other classes keeps its trunk), or from scratch (He-initialised trunk). Score
layers start at zero and deconvolutions bilinear, as in the paper's surgery.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..models import ARCHS, FCNBase, build_model
from ..surgery import fcn_from_classifier, transplant
from . import distributed
from .config import TrainConfig
from .loop import FINAL_WEIGHTS, TrainResult, fit

# The staged chain that ends at each VGG net.
STAGE_CHAINS = {
    "fcn32s": ("fcn32s",),
    "fcn16s": ("fcn32s", "fcn16s"),
    "fcn8s": ("fcn32s", "fcn16s", "fcn8s"),
}
_VGG = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
# Keys only an FCN has (a classifier has none of them).
_FCN_KEYS = ("score_fr.weight", "classifier.4.weight")

Init = Union[None, str, os.PathLike, FCNBase, Mapping[str, torch.Tensor]]


@dataclass
class StagedResult:
    stages: List[TrainResult] = field(default_factory=list)

    @property
    def model(self) -> FCNBase:
        return self.stages[-1].model

    @property
    def mean_ius(self) -> Dict[str, Optional[float]]:
        return {r.arch: r.mean_iu for r in self.stages}


@torch.no_grad()
def he_init_(model: nn.Module) -> nn.Module:
    """He (fan-out, ReLU) init of every trunk convolution, zero biases: training from scratch
    without BatchNorm needs it to keep activations alive through VGG's 15 layers. Score layers
    and deconvolutions are left as the model built them (zero / bilinear)."""
    for name, m in model.named_modules():
        if type(m) is nn.Conv2d and not name.split(".")[-1].startswith("score") \
                and name not in ("classifier.4", "aux_classifier.4"):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                m.bias.zero_()
    return model


def _source(init: Init):
    """("fcn", state dict) or ("classifier", state dict) of an ``init`` other than scratch."""
    if isinstance(init, nn.Module):
        return "fcn", init.state_dict()
    if isinstance(init, Mapping):
        sd = ckpt.clean_state_dict(dict(init), "init state dict")
        return ("fcn" if any(k in sd for k in _FCN_KEYS) else "classifier"), sd
    if isinstance(init, (str, os.PathLike)):
        try:
            return "fcn", ckpt.read_checkpoint(init).state_dict
        except ckpt.CheckpointError:
            sd = ckpt.read_state_dict(init)  # no score layer: an ImageNet classifier, or garbage
            if any(k in sd for k in _FCN_KEYS):
                raise  # an FCN file with a real problem: report it
            return "classifier", sd
    raise TypeError(f"init must be None, 'scratch', a path, an FCN model or a state dict; "
                    f"got {type(init).__name__}")


def initial_model(arch: str, num_classes: int, init: Init = None, *,
                  widths: Optional[Sequence[int]] = None,
                  fc_width: Optional[int] = None) -> FCNBase:
    """The model a first stage starts from (see module doc); ``widths``/``fc_width`` narrow a VGG
    net (by default taken from an FCN ``init``, else VGG16's)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    kwargs = {}
    if widths is not None or fc_width is not None:
        if arch not in _VGG:
            raise ValueError(f"widths/fc_width only apply to the VGG nets, not {arch!r}")
        if widths is not None:
            kwargs["widths"] = tuple(widths)
        if fc_width is not None:
            kwargs["fc_width"] = int(fc_width)
    if init is None or (isinstance(init, str) and init == "scratch"):
        return he_init_(build_model(arch, num_classes, **kwargs))
    kind, sd = _source(init)
    if kind == "classifier":
        if kwargs:
            raise ValueError("widths/fc_width cannot narrow a pretrained classifier's trunk")
        return fcn_from_classifier(arch, sd, num_classes)
    if arch in _VGG:
        kwargs = {**ckpt.model_kwargs(arch, sd), **kwargs}
    elif arch.startswith("fcn_resnet"):
        kwargs = ckpt.model_kwargs(arch, sd)
    model = build_model(arch, num_classes, **kwargs)
    copied = transplant(sd, model)
    if not copied:
        raise ValueError(f"init shares no layer with {arch}: nothing to start from")
    return model


def next_stage(previous: FCNBase, arch: str) -> FCNBase:
    """``arch`` initialised from the previous stage: trunk, score_fr and the skips it has."""
    kwargs = {}
    if hasattr(previous, "widths"):
        kwargs = {"widths": previous.widths, "fc_width": previous.fc_width}
    model = build_model(arch, previous.num_classes, **kwargs).to(
        next(previous.parameters()).device)
    transplant(previous, model)
    return model


def _stage_list(arch: str, staged: bool) -> Sequence[str]:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    return STAGE_CHAINS.get(arch, (arch,)) if staged else (arch,)


def _iterations_per_stage(stages, iterations) -> List[int]:
    if isinstance(iterations, int):
        return [iterations] * len(stages)
    iterations = list(iterations)
    if len(iterations) != len(stages):
        raise ValueError(f"stage_iterations has {len(iterations)} entries for {len(stages)} stages "
                         f"({', '.join(stages)})")
    return [int(i) for i in iterations]


def train_staged(train_set, val_set=None, *, stages: Sequence[str] = ("fcn32s", "fcn16s", "fcn8s"),
                 num_classes: Optional[int] = None, init: Init = None,
                 config: Optional[TrainConfig] = None,
                 stage_iterations: Union[None, int, Sequence[int]] = None,
                 stage_lrs: Optional[Sequence[float]] = None,
                 widths: Optional[Sequence[int]] = None, fc_width: Optional[int] = None,
                 out_dir: Optional[str] = None, resume: bool = False,
                 class_names: Optional[Sequence[str]] = None) -> StagedResult:
    """Train ``stages`` in turn, each initialised from the one before (the first from ``init``).

    Each stage writes into ``out_dir/<arch>/``. ``stage_iterations`` / ``stage_lrs`` override the
    config's iterations / lr per stage (the paper lowers the lr for the later stages). With
    ``resume``, a finished stage (its ``model.safetensors`` exists) is loaded instead of retrained,
    and an interrupted one continues from its checkpoint.
    """
    config = config or TrainConfig()
    stages = list(stages)
    if not stages:
        raise ValueError("stages is empty")
    for a in stages:
        if a not in ARCHS:
            raise ValueError(f"unknown arch {a!r} in stages; known: {', '.join(ARCHS)}")
    if num_classes is None:
        num_classes = len(getattr(train_set, "classes", ()) or ()) or None
        if num_classes is None:
            raise ValueError("num_classes is needed: the training set has no .classes")
    class_names = class_names or getattr(train_set, "classes", None)
    iters = _iterations_per_stage(stages, stage_iterations if stage_iterations is not None
                                  else config.iterations)
    if stage_lrs is not None and len(stage_lrs) != len(stages):
        raise ValueError(f"stage_lrs has {len(stage_lrs)} entries for {len(stages)} stages")
    device = distributed.pick_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    d = distributed.init_from_env(device.type)  # once for all stages
    result = StagedResult()
    try:
        model = None
        for i, arch in enumerate(stages):
            model = (initial_model(arch, num_classes, init, widths=widths, fc_width=fc_width)
                     if model is None else next_stage(model, arch))
            stage_dir = os.path.join(out_dir, arch) if out_dir is not None else None
            done = stage_dir is not None and os.path.exists(os.path.join(stage_dir, FINAL_WEIGHTS))
            if resume and done:
                model, _ = ckpt.load_model(os.path.join(stage_dir, FINAL_WEIGHTS), arch=arch)
                result.stages.append(TrainResult(model, arch, iters[i], None, out_dir=stage_dir))
                continue
            cfg = config.replace(iterations=iters[i],
                                 **({"lr": stage_lrs[i]} if stage_lrs is not None else {}))
            r = fit(model, train_set, val_set, cfg, out_dir=stage_dir, resume=resume,
                    class_names=class_names, stage=arch)
            result.stages.append(r)
            model = r.model
    finally:
        d.close()
    return result


def train(train_set, arch: str = "fcn8s", val_set=None, *, staged: bool = True,
          num_classes: Optional[int] = None, init: Init = None,
          config: Optional[TrainConfig] = None,
          stage_iterations: Union[None, int, Sequence[int]] = None,
          widths: Optional[Sequence[int]] = None, fc_width: Optional[int] = None,
          out_dir: Optional[str] = None, resume: bool = False,
          class_names: Optional[Sequence[str]] = None, **options) -> StagedResult:
    """Train an FCN the paper's way; ``fcnfast.train``.

    ``arch="fcn8s"`` with ``staged=True`` trains FCN-32s, then FCN-16s from it, then FCN-8s from
    that (``"fcn16s"`` stops after 16s); ``"fcn8s_atonce"`` (and every non-VGG net) is one stage.
    ``init``: a convolutionalised-classifier source (a VGG16/AlexNet state dict or file), a trained
    FCN (path or model; new class counts keep the trunk), or None for scratch. Any
    :class:`TrainConfig` field may be passed as a keyword (``lr=``, ``iterations=``,
    ``flip=True``...). Returns every stage's model and scores.
    """
    config = (config or TrainConfig()).replace(**options) if options else (config or TrainConfig())
    return train_staged(train_set, val_set, stages=_stage_list(arch, staged),
                        num_classes=num_classes, init=init, config=config,
                        stage_iterations=stage_iterations, widths=widths, fc_width=fc_width,
                        out_dir=out_dir, resume=resume, class_names=class_names)


__all__ = ["STAGE_CHAINS", "StagedResult", "he_init_", "initial_model", "next_stage",
           "train_staged", "train"]

"""Pieces shared by the reference FCN models."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..convention import InputConvention
from .head_plan import HeadPlan, final_step
from .geometry import IDENTITY, CoordMap, chain_map, crop_offset, layer_map
from .init import bilinear_init_, zero_init_


def crop(t: torch.Tensor, offset: int, size) -> torch.Tensor:
    """Caffe's Crop layer: the (H, W) window of ``t`` starting at (offset, offset)."""
    h, w = size
    if offset + h > t.shape[-2] or offset + w > t.shape[-1]:
        raise RuntimeError(
            f"crop window {offset}+{(h, w)} exceeds the map {tuple(t.shape[-2:])}: "
            "the net's padding does not cover this input size")
    return t[..., offset:offset + h, offset:offset + w]


class FCNBase(nn.Module):
    """Common interface of every reference model.

    ``forward(x)`` takes a preprocessed (N, 3, H, W) batch in the net's input convention and returns
    (N, C, H, W) class scores aligned with the input.

    A model with several heads (SIFT Flow: semantic and geometric) names them in ``heads`` and
    its ``forward`` returns {head: scores}; ``head_classes`` gives each head's class count
    (``num_classes`` is the first head's).

    What the engine asks of a model (it never asks for its class):
    - ``run_trunk(x, keep)``: the coarse class scores the heads start from (a tensor, or a list in
      ``heads`` order), and the outputs of the layers named in ``keep`` (the skip features);
    - ``head_plans()``: each head as data (``head_plan.HeadPlan``), in ``heads`` order; () when the
      model has none the engine can run (a single-head model defines ``head_plan()``);
    - ``trunk_chain``: the trunk's top-level layers in the order ``run_trunk`` applies them, each
      feeding the next (() when it is not such a chain), and ``score_heads(h)``, what turns the
      chain's output into the coarse scores (identity when the chain ends in them): the engine's
      border skipping walks the chain itself;
    - ``fc_block``: the chain's last layers, from a convolution on, that work row by row (fc6 →
      score_fr), which the engine may run in row tiles when memory is short (() for none).
    Any module may also offer ``layer_chains()``: groups of child names its forward applies one
    after another, so the engine can fuse a convolution with the ReLU after it.
    """

    arch: str = ""
    input_convention: InputConvention
    heads: Tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    @property
    def head_classes(self) -> Tuple[int, ...]:
        return (self.num_classes,)

    def run_trunk(self, x: torch.Tensor, keep=(), until: Optional[str] = None):
        raise NotImplementedError

    def head_plan(self) -> Optional[HeadPlan]:
        return None

    def head_plans(self) -> Tuple[HeadPlan, ...]:
        plan = self.head_plan()
        return () if plan is None else (plan,)

    def score_heads(self, h):
        return h

    @property
    def trunk_chain(self) -> Tuple[str, ...]:
        return ()

    @property
    def fc_block(self) -> Tuple[str, ...]:
        return ()

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}"


class CaffeLRN(nn.LocalResponseNorm):
    """Caffe's ACROSS_CHANNELS LRN (local_size 5, alpha 1e-4, beta 0.75, k 1), as in AlexNet/GoogLeNet.

    Caffe divides alpha by local_size, as torch does. Computed in float32: torch's CPU kernel has no
    bfloat16/float16 version, and x**2 summed over channels overflows float16 easily.
    """

    def __init__(self):
        super().__init__(5, alpha=1e-4, beta=0.75, k=1.0)

    def forward(self, x):
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


class ChainFCN(FCNBase):
    """An FCN whose trunk is a chain of named layers ending in ``score_fr`` (VGG, AlexNet, GoogLeNet).

    Layers are registered in order with ``_add``; ``map_of`` gives the coordinate map from the
    image to any of them, from which the crops are computed.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self._trunk_names = []

    def _add(self, name: str, module: nn.Module):
        setattr(self, name, module)
        self._trunk_names.append(name)

    def map_of(self, name: str) -> CoordMap:
        """Coordinate map from the input image to the output of trunk layer ``name``."""
        layers = self._trunk_names[: self._trunk_names.index(name) + 1]
        return chain_map((getattr(self, n) for n in layers), name)

    @property
    def num_classes(self) -> int:
        return self.score_fr.out_channels

    def _add_fc_and_score(self, cin: int, fc6_kernel: int, num_classes: int, fc_width: int = 4096):
        """fc6 (the classifier's first FC layer as a k×k conv), fc7 (1×1), then score_fr.

        ``fc_width`` is 4096 in the ImageNet classifiers; narrow models use less.
        """
        self._add("fc6", nn.Conv2d(cin, fc_width, fc6_kernel))
        self._add("relu6", nn.ReLU(inplace=True))
        self._add("drop6", nn.Dropout2d())
        self._add("fc7", nn.Conv2d(fc_width, fc_width, 1))
        self._add("relu7", nn.ReLU(inplace=True))
        self._add("drop7", nn.Dropout2d())
        self._add("score_fr", nn.Conv2d(fc_width, num_classes, 1))

    def _add_upscore(self, kernel: int, stride: int = 32):
        """The one deconvolution of a 32s net (bilinear, no bias), its crop from the geometry.

        Zeroes score_fr: the paper's surgery starts score layers at zero.
        """
        n = self.num_classes
        self.upscore = nn.ConvTranspose2d(n, n, kernel, stride=stride, bias=False)
        up = self.map_of("score_fr").then(layer_map(self.upscore))
        self.crop_offsets = {"upscore": crop_offset(up, IDENTITY, "upscore")}
        zero_init_(self.score_fr)
        bilinear_init_(self.upscore)

    def _upscore_forward(self, x: torch.Tensor) -> torch.Tensor:
        return crop(self.upscore(self.run_trunk(x)[0]), self.crop_offsets["upscore"], x.shape[-2:])

    def run_trunk(self, x: torch.Tensor, keep=(), until: Optional[str] = None, score: bool = True):
        """The coarse scores (``score_heads`` of the chain's output), and the outputs of the layers
        named in ``keep`` (a dict). With ``until``, the chain stops before that layer and its input
        comes back instead; with ``score=False``, the chain's output unscored."""
        kept = {}
        h = x
        for name in self._trunk_names:
            if name == until:
                return h, kept
            h = getattr(self, name)(h)
            if name in keep:
                kept[name] = h
        return (self.score_heads(h) if score else h), kept

    def head_plan(self) -> HeadPlan:
        """A 32s net: one deconvolution to the image (FCN-16s/8s add their skips)."""
        return HeadPlan((), final_step(self.upscore, self.crop_offsets["upscore"]))

    @property
    def trunk_chain(self) -> Tuple[str, ...]:
        return tuple(self._trunk_names)

    @property
    def fc_block(self) -> Tuple[str, ...]:
        names = self._trunk_names
        return tuple(names[names.index("fc6"):]) if "fc6" in names else ()

    def layer_chains(self):
        return [list(self._trunk_names)]

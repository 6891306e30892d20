"""VGG16 FCN-32s / 16s / 8s / 8s at-once with the Caffe geometry and pytorch-fcn's attribute names.

pytorch-fcn (torchfcn) state dicts load into these unchanged. Pad 100 on conv1_1 and ceil-mode
pooling reproduce the official Caffe nets; the crop offsets come from ``geometry``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..convention import CAFFE_BGR
from .common import ChainFCN, crop
from .geometry import IDENTITY, crop_offset, layer_map
from .head_plan import HeadPlan, final_step, skip_step
from .init import bilinear_init_, zero_init_

# (block, convs, out channels) of VGG16's 13 convolutions.
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
VGG16_WIDTHS = tuple(cout for _, _, cout in VGG16_BLOCKS)
VGG16_FC_WIDTH = 4096


def _check_widths(widths, fc_width: int):
    """``widths`` as a tuple of 5 positive ints (one per block); ValueError naming the argument."""
    try:
        widths = tuple(int(w) for w in widths)
    except (TypeError, ValueError):
        raise TypeError(f"widths must be 5 integers (one per VGG block), got {widths!r}") from None
    if len(widths) != len(VGG16_BLOCKS) or min(widths) < 1:
        raise ValueError(f"widths must be 5 positive integers (one per VGG block), got {widths}")
    if int(fc_width) < 1:
        raise ValueError(f"fc_width must be a positive integer, got {fc_width}")
    return widths, int(fc_width)


class _VGG16FCN(ChainFCN):
    """VGG16 trunk; ``widths`` (per block) and ``fc_width`` (fc6/fc7) narrow it, e.g. for small
    models trained from scratch. Depth, kernels and geometry (hence the crops) never change."""

    input_convention = CAFFE_BGR

    def __init__(self, num_classes: int = 21, widths=VGG16_WIDTHS, fc_width: int = VGG16_FC_WIDTH):
        super().__init__(num_classes)
        self.widths, self.fc_width = _check_widths(widths, fc_width)
        cin = 3
        for (block, n, _), cout in zip(VGG16_BLOCKS, self.widths):
            for i in range(1, n + 1):
                pad = 100 if (block, i) == (1, 1) else 1
                self._add(f"conv{block}_{i}", nn.Conv2d(cin, cout, 3, padding=pad))
                self._add(f"relu{block}_{i}", nn.ReLU(inplace=True))
                cin = cout
            self._add(f"pool{block}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        self._add_fc_and_score(cin, 7, num_classes, fc_width=self.fc_width)

    def extra_repr(self) -> str:
        narrow = (self.widths, self.fc_width) != (VGG16_WIDTHS, VGG16_FC_WIDTH)
        extra = f", widths={self.widths}, fc_width={self.fc_width}" if narrow else ""
        return super().extra_repr() + extra

    def _init_head(self):
        zero_init_(self.score_fr)
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                bilinear_init_(m)

    def trunk(self, x: torch.Tensor):
        """pool3, pool4 and the score_fr output of the trunk."""
        h, kept = self.run_trunk(x, keep=("pool3", "pool4"))
        return kept["pool3"], kept["pool4"], h


class FCN32s(_VGG16FCN):
    arch = "fcn32s"

    def __init__(self, num_classes: int = 21, widths=VGG16_WIDTHS, fc_width: int = VGG16_FC_WIDTH):
        super().__init__(num_classes, widths, fc_width)
        self._add_upscore(64)

    def forward(self, x):
        return self._upscore_forward(x)


class FCN16s(_VGG16FCN):
    arch = "fcn16s"

    def __init__(self, num_classes: int = 21, widths=VGG16_WIDTHS, fc_width: int = VGG16_FC_WIDTH):
        super().__init__(num_classes, widths, fc_width)
        self.score_pool4 = nn.Conv2d(self.widths[3], num_classes, 1)
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore16 = nn.ConvTranspose2d(num_classes, num_classes, 32, stride=16, bias=False)
        up2 = self.map_of("score_fr").then(layer_map(self.upscore2))
        up16 = up2.then(layer_map(self.upscore16))
        self.crop_offsets = {
            "score_pool4": crop_offset(self.map_of("pool4").then(layer_map(self.score_pool4)), up2,
                                       "score_pool4"),
            "upscore16": crop_offset(up16, IDENTITY, "upscore16"),
        }
        self._init_head()
        zero_init_(self.score_pool4)

    def head_plan(self) -> HeadPlan:
        skips = (skip_step(self.upscore2, "pool4", self.score_pool4,
                           self.crop_offsets["score_pool4"]),)
        return HeadPlan(skips, final_step(self.upscore16, self.crop_offsets["upscore16"]))

    def forward(self, x):
        _, pool4, h = self.trunk(x)
        up2 = self.upscore2(h)
        h = up2 + crop(self.score_pool4(pool4), self.crop_offsets["score_pool4"], up2.shape[-2:])
        return crop(self.upscore16(h), self.crop_offsets["upscore16"], x.shape[-2:])


class FCN8s(_VGG16FCN):
    arch = "fcn8s"
    # FCN-8s at-once scales the pool features before scoring them (1 for the staged net).
    pool4_scale = 1.0
    pool3_scale = 1.0

    def __init__(self, num_classes: int = 21, widths=VGG16_WIDTHS, fc_width: int = VGG16_FC_WIDTH):
        super().__init__(num_classes, widths, fc_width)
        self.score_pool3 = nn.Conv2d(self.widths[2], num_classes, 1)
        self.score_pool4 = nn.Conv2d(self.widths[3], num_classes, 1)
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        up2 = self.map_of("score_fr").then(layer_map(self.upscore2))
        up_pool4 = up2.then(layer_map(self.upscore_pool4))
        up8 = up_pool4.then(layer_map(self.upscore8))
        self.crop_offsets = {
            "score_pool4": crop_offset(self.map_of("pool4").then(layer_map(self.score_pool4)), up2,
                                       "score_pool4"),
            "score_pool3": crop_offset(self.map_of("pool3").then(layer_map(self.score_pool3)),
                                       up_pool4, "score_pool3"),
            "upscore8": crop_offset(up8, IDENTITY, "upscore8"),
        }
        self._init_head()
        zero_init_(self.score_pool3)
        zero_init_(self.score_pool4)

    def head_plan(self) -> HeadPlan:
        """Also at-once: its pool scales are the class attributes."""
        skips = (skip_step(self.upscore2, "pool4", self.score_pool4,
                           self.crop_offsets["score_pool4"], self.pool4_scale),
                 skip_step(self.upscore_pool4, "pool3", self.score_pool3,
                           self.crop_offsets["score_pool3"], self.pool3_scale))
        return HeadPlan(skips, final_step(self.upscore8, self.crop_offsets["upscore8"]))

    def forward(self, x):
        pool3, pool4, h = self.trunk(x)
        up2 = self.upscore2(h)
        s4 = self.score_pool4(pool4 * self.pool4_scale if self.pool4_scale != 1.0 else pool4)
        h = self.upscore_pool4(up2 + crop(s4, self.crop_offsets["score_pool4"], up2.shape[-2:]))
        s3 = self.score_pool3(pool3 * self.pool3_scale if self.pool3_scale != 1.0 else pool3)
        h = h + crop(s3, self.crop_offsets["score_pool3"], h.shape[-2:])
        return crop(self.upscore8(h), self.crop_offsets["upscore8"], x.shape[-2:])


class FCN8sAtOnce(FCN8s):
    """FCN-8s trained in one stage: pool4 scaled by 0.01 and pool3 by 0.0001 before scoring."""

    arch = "fcn8s_atonce"
    pool4_scale = 0.01
    pool3_scale = 0.0001

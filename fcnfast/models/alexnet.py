"""FCN-AlexNet (FCN-32s on an AlexNet trunk) with the official Caffe voc-fcn-alexnet geometry.

Layer names are the Caffe ones (conv1..conv5, fc6, fc7, score_fr, upscore), so converted caffemodel
weights load by name. Pad 100 on conv1 and ceil-mode pooling follow the released net; the output
crop comes from ``geometry`` (18, as in the net's val.prototxt).
"""
from __future__ import annotations

import torch
from torch import nn

from ..convention import CAFFE_BGR
from .common import CaffeLRN, ChainFCN


class FCNAlexNet(ChainFCN):
    arch = "fcn_alexnet"
    input_convention = CAFFE_BGR

    def __init__(self, num_classes: int = 21):
        super().__init__(num_classes)
        # Pad 100 lets any input size >= 1 survive down to fc6 (the FCN nets' trick).
        self._add("conv1", nn.Conv2d(3, 96, 11, stride=4, padding=100))
        self._add("relu1", nn.ReLU(inplace=True))
        # CaffeNet order: pool before norm (bvlc_alexnet normalises first; the FCN net does not).
        self._add("pool1", nn.MaxPool2d(3, stride=2, ceil_mode=True))
        self._add("norm1", CaffeLRN())
        # groups=2 is the original two-GPU split; Caffe's group uses the same channel halves.
        self._add("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=2))
        self._add("relu2", nn.ReLU(inplace=True))
        self._add("pool2", nn.MaxPool2d(3, stride=2, ceil_mode=True))
        self._add("norm2", CaffeLRN())
        self._add("conv3", nn.Conv2d(256, 384, 3, padding=1))
        self._add("relu3", nn.ReLU(inplace=True))
        self._add("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=2))
        self._add("relu4", nn.ReLU(inplace=True))
        self._add("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=2))
        self._add("relu5", nn.ReLU(inplace=True))
        self._add("pool5", nn.MaxPool2d(3, stride=2, ceil_mode=True))
        # fc6 is AlexNet's first FC layer reshaped: (4096, 9216) -> (4096, 256, 6, 6).
        self._add_fc_and_score(256, 6, num_classes)
        # 63/32, not 64/32: with AlexNet's 3x3/2 pools an even kernel would need a half-pixel crop.
        self._add_upscore(63)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The score_fr output (coarse class scores, stride 32)."""
        return self.run_trunk(x)[0]

    def forward(self, x):
        return self._upscore_forward(x)

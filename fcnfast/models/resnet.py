"""torchvision's FCN-ResNet50 / FCN-ResNet101, written without torchvision.

Module names, parameter shapes and numerics match torchvision's ``fcn_resnet50/101`` so their state
dicts (and the published COCO-VOC checkpoints) load with ``strict=True``. The backbone is ResNet
v1.5 (stride on the 3×3 conv) with layer3/layer4 dilated instead of strided: output stride 8.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..convention import TORCHVISION_RGB
from .common import FCNBase
from .head_plan import INTERPOLATE, HeadPlan

# Bottleneck blocks per stage.
_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # v1.5: the stride sits on the 3×3 conv; padding = dilation keeps the size.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """ResNet up to layer4 (torchvision's IntermediateLayerGetter keeps no avgpool/fc)."""

    def __init__(self, depth: int, replace_stride_with_dilation=(False, True, True)):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"depth must be one of {sorted(_DEPTHS)}, got {depth}")
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        blocks = _DEPTHS[depth]
        self.layer1 = self._make_layer(64, blocks[0])
        self.layer2 = self._make_layer(128, blocks[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(256, blocks[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(512, blocks[3], 2, replace_stride_with_dilation[2])
        # torchvision's init; any checkpoint overwrites it, but a fresh model starts the same way.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False):
        # As torchvision: a dilated stage trades its stride for dilation, but its first block still
        # uses the dilation of the stage before (so layer3's first block is undilated).
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        out = planes * Bottleneck.expansion
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = out
        layers += [Bottleneck(out, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def layer_chains(self):
        """The stem: conv1 → bn1 → relu (the engine fuses the ReLU into the folded conv)."""
        return [["conv1", "bn1", "relu", "maxpool"]]

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        """layer3 and layer4 features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer3(self.layer2(self.layer1(x)))
        return c3, self.layer4(c3)


class FCNHead(nn.Sequential):
    """torchvision's FCNHead: indices 0 (3×3 conv), 1 (BN), 4 (1×1 score conv) carry the weights."""

    def __init__(self, in_channels: int, channels: int):
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter, channels, 1),
        )


class FCNResNet(FCNBase):
    input_convention = TORCHVISION_RGB
    depth: int = 0

    def __init__(self, num_classes: int = 21, aux: bool = False):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = ResNetBackbone(self.depth)
        self.classifier = FCNHead(2048, num_classes)
        # The auxiliary head on layer3 only feeds the training loss; None keeps its keys out.
        self.aux_classifier = FCNHead(1024, num_classes) if aux else None

    @property
    def num_classes(self) -> int:
        return self.classifier[4].out_channels

    def run_trunk(self, x: torch.Tensor, keep=(), until: Optional[str] = None):
        """The classifier's stride-8 scores; no skip features (the head interpolates them)."""
        if keep or until is not None:
            raise ValueError("FCN-ResNet's trunk keeps no skip features and has no fc block")
        return self.classifier(self.backbone(x)[1]), {}

    def head_plan(self) -> HeadPlan:
        return HeadPlan((), INTERPOLATE)

    def _up(self, t, size):
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    def forward_with_aux(self, x):
        """(main scores, aux scores or None), both (N, C, H, W) at the input size."""
        size = x.shape[-2:]
        c3, c4 = self.backbone(x)
        out = self._up(self.classifier(c4), size)
        aux = self._up(self.aux_classifier(c3), size) if self.aux_classifier is not None else None
        return out, aux

    def forward(self, x):
        return self._up(self.run_trunk(x)[0], x.shape[-2:])


class FCNResNet50(FCNResNet):
    arch = "fcn_resnet50"
    depth = 50


class FCNResNet101(FCNResNet):
    arch = "fcn_resnet101"
    depth = 101

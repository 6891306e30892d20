"""FCN-GoogLeNet (the paper's FCN-32s on a GoogLeNet trunk) with Caffe bvlc_googlenet geometry.

The trunk is bvlc_googlenet (biases, LRN, ceil-mode pooling, no BatchNorm) up to inception_5b, minus
its average pooling, dropout and classifier. Module names are the Caffe layer names with '/' read as
nesting, so ``conv1/7x7_s2`` is ``conv1.7x7_s2`` and converted caffemodel weights load by name.
The output crop comes from ``geometry``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..convention import CAFFE_BGR
from .common import CaffeLRN, ChainFCN
from .geometry import IDENTITY, GeometryError, chain_map

# Inception channels: (in, 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj), from bvlc_googlenet.
_INCEPTIONS = OrderedDict([
    ("3a", (192, 64, 96, 128, 16, 32, 32)),
    ("3b", (256, 128, 128, 192, 32, 96, 64)),
    ("4a", (480, 192, 96, 208, 16, 48, 64)),
    ("4b", (512, 160, 112, 224, 24, 64, 64)),
    ("4c", (512, 128, 128, 256, 24, 64, 64)),
    ("4d", (512, 112, 144, 288, 32, 64, 64)),
    ("4e", (528, 256, 160, 320, 32, 128, 128)),
    ("5a", (832, 256, 160, 320, 32, 128, 128)),
    ("5b", (832, 384, 192, 384, 48, 128, 128)),
])
# A 3x3/2 pool (Caffe's pool{1..4}/3x3_s2) follows these blocks.
_POOL_AFTER = {"3b": "pool3", "4e": "pool4"}


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


class Inception(nn.Module):
    """One GoogLeNet inception block; children carry the Caffe names (``1x1``, ``pool_proj``...)."""

    # The four branches in concatenation order, as child names.
    BRANCHES = (
        ("1x1", "relu_1x1"),
        ("3x3_reduce", "relu_3x3_reduce", "3x3", "relu_3x3"),
        ("5x5_reduce", "relu_5x5_reduce", "5x5", "relu_5x5"),
        ("pool", "pool_proj", "relu_pool_proj"),
    )

    def __init__(self, cin, n1x1, n3red, n3, n5red, n5, npool):
        super().__init__()
        layers = [
            ("1x1", nn.Conv2d(cin, n1x1, 1)),
            ("3x3_reduce", nn.Conv2d(cin, n3red, 1)),
            ("3x3", nn.Conv2d(n3red, n3, 3, padding=1)),
            ("5x5_reduce", nn.Conv2d(cin, n5red, 1)),
            ("5x5", nn.Conv2d(n5red, n5, 5, padding=2)),
            # Stride 1 with pad 1: ceil mode changes nothing here, kept as in Caffe.
            ("pool", nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)),
            ("pool_proj", nn.Conv2d(cin, npool, 1)),
        ]
        for name, module in layers:
            self.add_module(name, module)
            if name != "pool":
                self.add_module(f"relu_{name}", nn.ReLU(inplace=True))
        self.out_channels = n1x1 + n3 + n5 + npool

    def layer_chains(self):
        """Each branch is a chain (the engine fuses its ReLUs)."""
        return [list(b) for b in self.BRANCHES]

    def _branch(self, names):
        return [self._modules[n] for n in names]

    def coord_map(self):
        """Identity: the concat needs every branch to keep coordinates in place.

        Each branch is stride 1, so a zero offset also means it keeps the size.
        """
        for names in self.BRANCHES:
            m = chain_map(self._branch(names), names[0])
            if m != IDENTITY:
                raise GeometryError(f"inception branch {names[0]} moves coordinates: {m}")
        return IDENTITY

    def forward(self, x):
        outs = []
        for names in self.BRANCHES:
            h = x
            for layer in self._branch(names):
                h = layer(h)
            outs.append(h)
        return torch.cat(outs, 1)


class FCNGoogLeNet(ChainFCN):
    arch = "fcn_googlenet"
    input_convention = CAFFE_BGR

    def __init__(self, num_classes: int = 21):
        super().__init__(num_classes)
        # Pad 100 instead of bvlc_googlenet's 3, like the FCN nets: every input size >= 1 survives.
        self._add("conv1", nn.Sequential(OrderedDict([
            ("7x7_s2", nn.Conv2d(3, 64, 7, stride=2, padding=100)),
            ("relu_7x7", nn.ReLU(inplace=True)),
        ])))
        self._add("pool1", nn.Sequential(OrderedDict([("3x3_s2", _pool()), ("norm1", CaffeLRN())])))
        self._add("conv2", nn.Sequential(OrderedDict([
            ("3x3_reduce", nn.Conv2d(64, 64, 1)),
            ("relu_3x3_reduce", nn.ReLU(inplace=True)),
            ("3x3", nn.Conv2d(64, 192, 3, padding=1)),
            ("relu_3x3", nn.ReLU(inplace=True)),
            ("norm2", CaffeLRN()),
        ])))
        self._add("pool2", nn.Sequential(OrderedDict([("3x3_s2", _pool())])))
        cin = 192
        for block, (c_in, *chans) in _INCEPTIONS.items():
            if c_in != cin:
                raise RuntimeError(f"inception_{block}: table says {c_in} inputs, trunk has {cin}")
            inc = Inception(cin, *chans)
            self._add(f"inception_{block}", inc)
            cin = inc.out_channels
            if block in _POOL_AFTER:
                self._add(_POOL_AFTER[block], nn.Sequential(OrderedDict([("3x3_s2", _pool())])))
        self._add("score_fr", nn.Conv2d(cin, num_classes, 1))
        # 63/32, not 64/32: with the 3x3/2 pools an even kernel would need a half-pixel crop.
        self._add_upscore(63)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The score_fr output (coarse class scores, stride 32)."""
        return self.run_trunk(x)[0]

    def forward(self, x):
        return self._upscore_forward(x)

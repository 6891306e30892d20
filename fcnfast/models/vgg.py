"""VGG16 FCN-32s / 16s / 8s / 8s at-once with the Caffe geometry and pytorch-fcn's attribute names.

pytorch-fcn (torchfcn) state dicts load into these unchanged. Pad 100 on conv1_1 and ceil-mode
pooling reproduce the official Caffe nets; the crop offsets come from ``geometry``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ..convention import CAFFE_BGR, NYUD_COLOR_BGR, NYUD_HHA, SIFTFLOW_BGR
from .common import ChainFCN, FCNBase, crop
from .geometry import IDENTITY, chain_map, crop_offset, layer_map
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


def vgg16_layers(widths, fc_width: int):
    """(name, layer) of the VGG16 trunk in order, conv1_1 … drop7: pad 100 on conv1_1, ceil-mode
    pools, fc6 a 7×7 convolution (the Caffe geometry)."""
    cin = 3
    for (block, n, _), cout in zip(VGG16_BLOCKS, widths):
        for i in range(1, n + 1):
            pad = 100 if (block, i) == (1, 1) else 1
            yield f"conv{block}_{i}", nn.Conv2d(cin, cout, 3, padding=pad)
            yield f"relu{block}_{i}", nn.ReLU(inplace=True)
            cin = cout
        yield f"pool{block}", nn.MaxPool2d(2, stride=2, ceil_mode=True)
    yield from (("fc6", nn.Conv2d(cin, fc_width, 7)), ("relu6", nn.ReLU(inplace=True)),
                ("drop6", nn.Dropout2d()), ("fc7", nn.Conv2d(fc_width, fc_width, 1)),
                ("relu7", nn.ReLU(inplace=True)), ("drop7", nn.Dropout2d()))


class _VGG16FCN(ChainFCN):
    """VGG16 trunk and FCN heads of stride ``head_stride`` (32, 16 or 8); ``widths`` (per block)
    and ``fc_width`` (fc6/fc7) narrow it, e.g. for small models trained from scratch. Depth,
    kernels and geometry (hence the crops) never change.

    One head (``HEADS = ()``): pytorch-fcn's names, ``score_fr`` ending the trunk chain, then
    ``upscore`` (32s) or ``upscore2``, ``score_pool4``, ``upscore16`` (16s) or ... ``upscore8``
    (8s). Several heads (SIFT Flow): the chain ends at ``drop7`` and each head's layers carry its
    suffix, as the Caffe release names them (``score_fr_sem``, ``upscore2_sem``, ...).
    """

    input_convention = CAFFE_BGR
    head_stride = 32
    # (head name, layer-name suffix) of a multi-head net; () for one head.
    HEADS: Tuple[Tuple[str, str], ...] = ()
    # FCN-8s at-once scales the pool features before scoring them (1 for the staged nets).
    pool4_scale = 1.0
    pool3_scale = 1.0

    def __init__(self, num_classes: int = 21, widths=VGG16_WIDTHS, fc_width: int = VGG16_FC_WIDTH,
                 head_classes: Optional[Sequence[int]] = None):
        super().__init__(num_classes)
        self.widths, self.fc_width = _check_widths(widths, fc_width)
        for name, module in vgg16_layers(self.widths, self.fc_width):
            self._add(name, module)
        self.crop_offsets = {}
        if not self.HEADS:
            self._add("score_fr", nn.Conv2d(self.fc_width, num_classes, 1))
            self._add_head("", num_classes, self.map_of("score_fr"))
            return
        classes = [num_classes] + list(head_classes or ())
        if len(classes) != len(self.HEADS):
            raise ValueError(f"{type(self).__name__} has {len(self.HEADS)} heads; give "
                             f"num_classes and head_classes for the other {len(self.HEADS) - 1}")
        for (_, sfx), n in zip(self.HEADS, classes):
            if n < 1:
                raise ValueError(f"every head needs >= 1 class, got {classes}")
            score = nn.Conv2d(self.fc_width, n, 1)
            setattr(self, f"score_fr{sfx}", score)
            self._add_head(sfx, n, self.map_of("drop7").then(layer_map(score)))

    def _add_head(self, sfx: str, n: int, coarse):
        """The upsampling layers of one head over its coarse scores (whose coordinate map is
        ``coarse``), their crops from the geometry; score layers zeroed, deconvolutions bilinear
        (the paper's surgery)."""
        def add(name, module):
            setattr(self, name + sfx, module)
            return module

        def deconv(k, s):
            return nn.ConvTranspose2d(n, n, k, stride=s, bias=False)

        o = self.crop_offsets
        zero_init_(getattr(self, "score_fr" + sfx))
        if self.head_stride == 32:
            up = add("upscore", deconv(64, 32))
            o["upscore" + sfx] = crop_offset(coarse.then(layer_map(up)), IDENTITY, "upscore" + sfx)
            bilinear_init_(up)
            return
        if self.head_stride == 8:
            add("score_pool3", nn.Conv2d(self.widths[2], n, 1))
        score4 = add("score_pool4", nn.Conv2d(self.widths[3], n, 1))
        up2 = add("upscore2", deconv(4, 2))
        m2 = coarse.then(layer_map(up2))
        o["score_pool4" + sfx] = crop_offset(self.map_of("pool4").then(layer_map(score4)), m2,
                                             "score_pool4" + sfx)
        if self.head_stride == 16:
            last = add("upscore16", deconv(32, 16))
            o["upscore16" + sfx] = crop_offset(m2.then(layer_map(last)), IDENTITY, "upscore16" + sfx)
        else:
            last = add("upscore8", deconv(16, 8))
            up4 = add("upscore_pool4", deconv(4, 2))
            m4 = m2.then(layer_map(up4))
            score3 = getattr(self, "score_pool3" + sfx)
            o["score_pool3" + sfx] = crop_offset(self.map_of("pool3").then(layer_map(score3)), m4,
                                                 "score_pool3" + sfx)
            o["upscore8" + sfx] = crop_offset(m4.then(layer_map(last)), IDENTITY, "upscore8" + sfx)
            zero_init_(score3)
            bilinear_init_(up4)
        zero_init_(score4)
        bilinear_init_(up2)
        bilinear_init_(last)

    def extra_repr(self) -> str:
        narrow = (self.widths, self.fc_width) != (VGG16_WIDTHS, VGG16_FC_WIDTH)
        extra = f", widths={self.widths}, fc_width={self.fc_width}" if narrow else ""
        return super().extra_repr() + extra

    # -- running -----------------------------------------------------------------------------
    def trunk(self, x: torch.Tensor):
        """pool3, pool4 and the trunk's output (score_fr; drop7 for a multi-head net)."""
        h, kept = ChainFCN.run_trunk(self, x, keep=("pool3", "pool4"), until=None, score=False)
        return kept["pool3"], kept["pool4"], h

    def _scaled(self, features: torch.Tensor, scale: float) -> torch.Tensor:
        return features * scale if scale != 1.0 else features

    def _head(self, sfx: str, h, pool3, pool4, size):
        """One head's full-resolution scores from its coarse scores ``h``."""
        o, layer = self.crop_offsets, (lambda name: getattr(self, name + sfx))
        if self.head_stride == 32:
            return crop(layer("upscore")(h), o["upscore" + sfx], size)
        up2 = layer("upscore2")(h)
        s4 = layer("score_pool4")(self._scaled(pool4, self.pool4_scale))
        h = up2 + crop(s4, o["score_pool4" + sfx], up2.shape[-2:])
        if self.head_stride == 16:
            return crop(layer("upscore16")(h), o["upscore16" + sfx], size)
        h = layer("upscore_pool4")(h)
        s3 = layer("score_pool3")(self._scaled(pool3, self.pool3_scale))
        h = h + crop(s3, o["score_pool3" + sfx], h.shape[-2:])
        return crop(layer("upscore8")(h), o["upscore8" + sfx], size)

    def _head_plan(self, sfx: str) -> HeadPlan:
        o, layer = self.crop_offsets, (lambda name: getattr(self, name + sfx))
        if self.head_stride == 32:
            return HeadPlan((), final_step(layer("upscore"), o["upscore" + sfx]))
        skips = [skip_step(layer("upscore2"), "pool4", layer("score_pool4"),
                           o["score_pool4" + sfx], self.pool4_scale)]
        if self.head_stride == 16:
            return HeadPlan(tuple(skips), final_step(layer("upscore16"), o["upscore16" + sfx]))
        skips.append(skip_step(layer("upscore_pool4"), "pool3", layer("score_pool3"),
                               o["score_pool3" + sfx], self.pool3_scale))
        return HeadPlan(tuple(skips), final_step(layer("upscore8"), o["upscore8" + sfx]))

    def forward(self, x):
        pool3, pool4, h = self.trunk(x)
        if not self.HEADS:
            return self._head("", h, pool3, pool4, x.shape[-2:])
        return {name: self._head(sfx, getattr(self, "score_fr" + sfx)(h), pool3, pool4, x.shape[-2:])
                for name, sfx in self.HEADS}

    # -- what the engine asks ----------------------------------------------------------------
    @property
    def heads(self) -> Tuple[str, ...]:
        return tuple(name for name, _ in self.HEADS)

    @property
    def head_classes(self) -> Tuple[int, ...]:
        if not self.HEADS:
            return (self.num_classes,)
        return tuple(getattr(self, "score_fr" + sfx).out_channels for _, sfx in self.HEADS)

    @property
    def num_classes(self) -> int:
        return self.head_classes[0] if self.HEADS else self.score_fr.out_channels

    def head_plan(self) -> Optional[HeadPlan]:
        return None if self.HEADS else self._head_plan("")

    def head_plans(self) -> Tuple[HeadPlan, ...]:
        if not self.HEADS:
            return (self._head_plan(""),)
        return tuple(self._head_plan(sfx) for _, sfx in self.HEADS)

    def score_heads(self, h: torch.Tensor):
        if not self.HEADS:
            return h
        return [getattr(self, "score_fr" + sfx)(h) for _, sfx in self.HEADS]


class FCN32s(_VGG16FCN):
    arch = "fcn32s"
    head_stride = 32


class FCN16s(_VGG16FCN):
    arch = "fcn16s"
    head_stride = 16


class FCN8s(_VGG16FCN):
    arch = "fcn8s"
    head_stride = 8


class FCN8sAtOnce(FCN8s):
    """FCN-8s trained in one stage: pool4 scaled by 0.01 and pool3 by 0.0001 before scoring."""

    arch = "fcn8s_atonce"
    pool4_scale = 0.01
    pool3_scale = 0.0001


# SIFT Flow (the paper's section 5): one trunk, a semantic head (33 classes) and a geometric one
# (3: sky, horizontal, vertical), trained together.
SIFTFLOW_HEADS = (("semantic", "_sem"), ("geometric", "_geo"))


class _SIFTFlow:
    """The SIFT Flow defaults over a VGG FCN of any stride: two heads, 33 + 3 classes, its mean."""

    HEADS = SIFTFLOW_HEADS
    input_convention = SIFTFLOW_BGR

    def __init__(self, num_classes: int = 33, widths=VGG16_WIDTHS, fc_width: int = VGG16_FC_WIDTH,
                 head_classes: Sequence[int] = (3,)):
        super().__init__(num_classes, widths, fc_width, head_classes)


class SIFTFlowFCN32s(_SIFTFlow, FCN32s):
    arch = "siftflow_fcn32s"


class SIFTFlowFCN16s(_SIFTFlow, FCN16s):
    arch = "siftflow_fcn16s"


class SIFTFlowFCN8s(_SIFTFlow, FCN8s):
    arch = "siftflow_fcn8s"


class NYUDFCN32sColorHHA(FCNBase):
    """NYUDv2's late-fusion net (the paper's RGB-HHA FCN-32s): two VGG16 trunks, one on the colour
    image and one on its HHA encoding of depth, whose class scores are summed with coefficients
    0.5/0.5 (``score_fused``) before one 64/32 deconvolution and crop 19. Layer names are the
    release's (``conv1_1color`` … ``score_frcolor``, ``conv1_1hha`` … ``score_frhha``, ``upscore``).

    The input is 6 channels: the colour stream's 3 (``NYUD_COLOR_BGR``), then the HHA stream's 3
    (``NYUD_HHA``); ``input_convention`` is that pair.
    """

    arch = "nyud_fcn32s_color_hha"
    STREAMS = ("color", "hha")
    FUSION = (0.5, 0.5)
    input_convention = (NYUD_COLOR_BGR, NYUD_HHA)
    input_names = ("rgb", "hha")

    def __init__(self, num_classes: int = 40, widths=VGG16_WIDTHS, fc_width: int = VGG16_FC_WIDTH):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.widths, self.fc_width = _check_widths(widths, fc_width)
        self._chains = []
        for stream in self.STREAMS:
            names = []
            for name, module in list(vgg16_layers(self.widths, self.fc_width)) + [
                    ("score_fr", nn.Conv2d(self.fc_width, num_classes, 1))]:
                setattr(self, name + stream, module)
                names.append(name + stream)
            self._chains.append(names)
            zero_init_(getattr(self, "score_fr" + stream))
        self.upscore = nn.ConvTranspose2d(num_classes, num_classes, 64, stride=32, bias=False)
        bilinear_init_(self.upscore)
        # Both streams have one geometry: the colour one gives the crop.
        coarse = chain_map((getattr(self, n) for n in self._chains[0]), "color stream")
        self.crop_offsets = {"upscore": crop_offset(coarse.then(layer_map(self.upscore)), IDENTITY,
                                                    "upscore")}

    @property
    def num_classes(self) -> int:
        return self.upscore.out_channels

    def extra_repr(self) -> str:
        narrow = (self.widths, self.fc_width) != (VGG16_WIDTHS, VGG16_FC_WIDTH)
        return super().extra_repr() + (f", widths={self.widths}, fc_width={self.fc_width}"
                                       if narrow else "")

    def run_trunk(self, x: torch.Tensor, keep=(), until: Optional[str] = None):
        """score_fused: 0.5·score_frcolor(colour) + 0.5·score_frhha(HHA); no skip features."""
        if keep or until is not None:
            raise ValueError("the two-stream net keeps no skip features and has no fc block")
        if x.shape[1] != 3 * len(self.STREAMS):
            raise ValueError(f"{self.arch} takes {3 * len(self.STREAMS)} input channels (colour, "
                             f"then HHA), got {x.shape[1]}")
        fused = None
        for names, part, coeff in zip(self._chains, x.split(3, 1), self.FUSION):
            h = part
            for name in names:
                h = getattr(self, name)(h)
            fused = coeff * h if fused is None else fused + coeff * h
        return fused, {}

    def forward(self, x):
        return crop(self.upscore(self.run_trunk(x)[0]), self.crop_offsets["upscore"], x.shape[-2:])

    def head_plan(self) -> HeadPlan:
        return HeadPlan((), final_step(self.upscore, self.crop_offsets["upscore"]))

    def layer_chains(self):
        return [list(names) for names in self._chains]

"""The paper's net surgery: classifiers become FCN trunks, staged nets inherit their parents.

As the official ``surgery.py``: an ImageNet classifier's fully connected layers are reshaped into
convolutions (VGG16 fc6 (4096, 25088) -> (4096, 512, 7, 7), AlexNet fc6 (4096, 9216) -> (4096, 256,
6, 6), fc7 -> 1×1), score layers start at zero and deconvolutions at the bilinear kernel. Returned
tensors may share storage with the input state dict (reshapes are views); ``load_state_dict``
copies.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Mapping, Tuple, Union

import torch
from torch import nn

from .models import build_model
from .models.init import bilinear_init_, bilinear_weight, upsample_filt, zero_init_
from .models.vgg import VGG16_BLOCKS

StateDict = Mapping[str, torch.Tensor]

# Indices of those convolutions in torchvision's ``vgg16().features`` (ReLUs and pools in between).
_TV_VGG16_FEATURES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _vgg16_convs() -> List[Tuple[str, Tuple[int, ...]]]:
    out, cin = [], 3
    for block, n, cout in VGG16_BLOCKS:
        for i in range(1, n + 1):
            out.append((f"conv{block}_{i}", (cout, cin, 3, 3)))
            cin = cout
    return out


# Caffe AlexNet (CaffeNet / bvlc_alexnet): conv2/4/5 are grouped (2 groups), so their weights see
# half the input channels; Caffe and PyTorch lay grouped weights out the same way.
_ALEXNET_CONVS = (("conv1", (96, 3, 11, 11)), ("conv2", (256, 48, 5, 5)),
                  ("conv3", (384, 256, 3, 3)), ("conv4", (384, 192, 3, 3)),
                  ("conv5", (256, 192, 3, 3)))

_VGG_ARCHS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")


def _tensor(sd: StateDict, key: str) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"state dict lacks {key!r}")
    t = sd[key]
    if not isinstance(t, torch.Tensor):
        try:  # numpy arrays from a caffemodel dump
            t = torch.as_tensor(t)
        except Exception:
            raise ValueError(f"{key!r} is not a tensor ({type(t).__name__})") from None
    return t


def _take(sd: StateDict, src: str, shape, dst: str, out: Dict[str, torch.Tensor], accept=()):
    """Copy layer ``src`` (weight + bias) to ``dst``, reshaping the weight to ``shape``.

    The weight must already have ``shape`` or one of the ``accept`` shapes (the FC layouts that
    reshape to it); anything else is a different network.
    """
    w = _tensor(sd, f"{src}.weight")
    if tuple(w.shape) != tuple(shape) and tuple(w.shape) not in [tuple(a) for a in accept]:
        want = " or ".join(str(tuple(s)) for s in (shape, *accept))
        raise ValueError(f"{src}.weight has shape {tuple(w.shape)}, expected {want}")
    b = _tensor(sd, f"{src}.bias")
    if tuple(b.shape) != (shape[0],):
        raise ValueError(f"{src}.bias has shape {tuple(b.shape)}, expected {(shape[0],)}")
    out[f"{dst}.weight"] = w.reshape(shape)
    out[f"{dst}.bias"] = b


def _fc_tail(sd: StateDict, names, in_shape, keep_classifier: bool, out: Dict[str, torch.Tensor]):
    """fc6 / fc7 (and fc8 as ``score_fr``) as convolutions; fc6 sees a (C, k, k) ``in_shape``."""
    fc6, fc7, fc8 = names
    c, k, _ = in_shape
    n_in = c * k * k
    # FC layers flatten (C, H, W) in C order, in Caffe and torchvision alike: a plain reshape.
    _take(sd, fc6, (4096, c, k, k), "fc6", out, accept=[(4096, n_in)])
    _take(sd, fc7, (4096, 4096, 1, 1), "fc7", out, accept=[(4096, 4096)])
    if keep_classifier:
        w = _tensor(sd, f"{fc8}.weight")
        if w.dim() not in (2, 4) or w.shape[1] != 4096 or (w.dim() == 4 and w.shape[2:] != (1, 1)):
            raise ValueError(f"{fc8}.weight has shape {tuple(w.shape)}, expected (classes, 4096)")
        _take(sd, fc8, (w.shape[0], 4096, 1, 1), "score_fr", out, accept=[(w.shape[0], 4096)])


def convolutionalize_vgg16(state_dict: StateDict,
                           keep_classifier: bool = False) -> Dict[str, torch.Tensor]:
    """An ImageNet VGG16 classifier's weights as the FCN trunk keys of ``models.vgg``.

    Accepts torchvision's layout (``features.N``, ``classifier.0/3/6``) or the Caffe one
    (``conv1_1`` .. ``conv5_3``, ``fc6``, ``fc7``, ``fc8``; fc6 as (4096, 25088) or already
    (4096, 512, 7, 7)). The classifier's last layer is dropped, as in the paper, unless
    ``keep_classifier``: then it comes back as ``score_fr`` (1000, 4096, 1, 1), which makes the FCN
    compute the classifier's logits.
    """
    if "features.0.weight" in state_dict:
        conv_src = [f"features.{i}" for i in _TV_VGG16_FEATURES]
        fc_src = ("classifier.0", "classifier.3", "classifier.6")
    elif "conv1_1.weight" in state_dict:
        conv_src = [name for name, _ in _vgg16_convs()]
        fc_src = ("fc6", "fc7", "fc8")
    else:
        raise ValueError("not a VGG16 state dict: found neither 'features.0.weight' (torchvision) "
                         "nor 'conv1_1.weight' (Caffe)")
    out: Dict[str, torch.Tensor] = {}
    for src, (dst, shape) in zip(conv_src, _vgg16_convs()):
        _take(state_dict, src, shape, dst, out)
    _fc_tail(state_dict, fc_src, (512, 7, 7), keep_classifier, out)
    return out


def convolutionalize_alexnet(state_dict: StateDict,
                             keep_classifier: bool = False) -> Dict[str, torch.Tensor]:
    """A Caffe AlexNet classifier's weights as the FCN-AlexNet trunk keys (conv1..conv5, fc6, fc7).

    Caffe layout only (grouped conv2/4/5, fc6 (4096, 9216) or (4096, 256, 6, 6)): torchvision's
    AlexNet is a different, ungrouped net with other channel counts; the shape check rejects it.
    """
    out: Dict[str, torch.Tensor] = {}
    for name, shape in _ALEXNET_CONVS:
        _take(state_dict, name, shape, name, out)
    _fc_tail(state_dict, ("fc6", "fc7", "fc8"), (256, 6, 6), keep_classifier, out)
    return out


def _convolutionalize(arch: str, state_dict: StateDict) -> Dict[str, torch.Tensor]:
    if arch in _VGG_ARCHS:
        return convolutionalize_vgg16(state_dict)
    if arch == "fcn_alexnet":
        return convolutionalize_alexnet(state_dict)
    raise ValueError(f"no classifier surgery for {arch!r}; supported: "
                     f"{', '.join(_VGG_ARCHS + ('fcn_alexnet',))}")


@torch.no_grad()
def fcn_from_classifier(arch: str, state_dict: StateDict, num_classes: int = 21) -> nn.Module:
    """A fresh FCN of ``arch`` whose trunk is the convolutionalised classifier ``state_dict``.

    Score layers start at zero and every deconvolution at the bilinear kernel (the paper's init).
    """
    trunk = _convolutionalize(arch, state_dict)  # validates arch before building a big model
    model = build_model(arch, num_classes=num_classes)
    missing, unexpected = model.load_state_dict(trunk, strict=False)
    if unexpected:
        raise ValueError(f"{arch}: trunk keys missing from the model: {', '.join(unexpected)}")
    # Only the head may be left to initialise; a missing trunk key would be a wiring bug.
    bad = [k for k in missing if not k.startswith(("score", "upscore"))]
    if bad:
        raise ValueError(f"{arch}: surgery left trunk keys unset: {', '.join(bad)}")
    for name, m in model.named_modules():
        if isinstance(m, nn.ConvTranspose2d):
            bilinear_init_(m)
        elif isinstance(m, nn.Conv2d) and name.split(".")[-1].startswith("score"):
            zero_init_(m)
    return model


@torch.no_grad()
def transplant(src: Union[nn.Module, StateDict], dst: nn.Module) -> List[str]:
    """Copy every state-dict entry of ``src`` whose name and shape match one of ``dst``.

    Staged training: FCN-32s -> FCN-16s -> FCN-8s each start from the previous net (trunk,
    score_fr, and the score_pool4/upscore2 of 16s into 8s). Returns the copied names; the rest of
    ``dst`` keeps its own (surgery) init. Mismatched shapes are skipped, never coerced.
    """
    if isinstance(src, nn.Module):
        src = src.state_dict()
    elif not isinstance(src, Mapping):
        raise ValueError("transplant source must be a module or a state dict, "
                         f"got {type(src).__name__}")
    dst_sd = dst.state_dict()  # tensors share storage with dst's parameters and buffers
    copied = []
    for name, t in src.items():
        d = dst_sd.get(name)
        if d is None or not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(d.shape):
            continue
        d.copy_(t)
        copied.append(name)
    return copied


# Class-scoring convolutions outside the ``score*`` naming (torchvision's FCNHead, main and aux).
_HEAD_SCORE_LAYERS = ("classifier.4", "aux_classifier.4")


def _is_score_layer(name: str, module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d
            and (name.split(".")[-1].startswith("score") or name in _HEAD_SCORE_LAYERS))


def _set_submodule(model: nn.Module, name: str, module: nn.Module):
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _fresh_score(old: nn.Conv2d, num_classes: int) -> nn.Conv2d:
    new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, stride=old.stride,
                    padding=old.padding, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    return zero_init_(new)


def _fresh_deconv(old: nn.ConvTranspose2d, num_classes: int) -> nn.ConvTranspose2d:
    new = nn.ConvTranspose2d(num_classes, num_classes, old.kernel_size, stride=old.stride,
                             padding=old.padding, bias=old.bias is not None,
                             device=old.weight.device, dtype=old.weight.dtype)
    return bilinear_init_(new)


@torch.no_grad()
def reset_classes(model: nn.Module, num_classes: int, inplace: bool = False) -> nn.Module:
    """``model`` with its trunk kept and fresh class layers for ``num_classes`` classes.

    Fine-tuning a trained FCN on new classes: every class-scoring convolution (``score_fr``,
    ``score_pool*``, torchvision's ``classifier.4``/``aux_classifier.4``) starts at zero and every
    deconvolution at the bilinear kernel, as the paper's surgery does. Everything else (trunk,
    fc6/fc7, the FCNHead's 3×3 conv and BatchNorm), the device, dtype and input convention carry
    over. A copy unless ``inplace``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an integer, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    targets = [(name, m) for name, m in model.named_modules()
               if _is_score_layer(name, m) or isinstance(m, nn.ConvTranspose2d)]
    if not any(_is_score_layer(name, m) for name, m in targets):
        raise ValueError(f"{type(model).__name__} has no class-scoring layer (score_fr or "
                         "classifier.4) to reset")
    if not inplace:
        model = copy.deepcopy(model)
    for name, old in targets:
        fresh = (_fresh_deconv(old, num_classes) if isinstance(old, nn.ConvTranspose2d)
                 else _fresh_score(old, num_classes))
        fresh.train(old.training)
        _set_submodule(model, name, fresh)
    return model


__all__ = ["upsample_filt", "bilinear_weight", "convolutionalize_vgg16", "convolutionalize_alexnet",
           "fcn_from_classifier", "transplant", "reset_classes"]

"""Reading, checking and writing FCN checkpoints.

Reads what people actually have: bare state dicts and trainer wrappers saved with ``torch.save``
(pytorch-fcn's ``{"model_state_dict": ...}``, ``{"state_dict": ...}``, ``{"model": ...}``),
DataParallel/DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes, plain
``.safetensors``, and fcnfast's own format (safetensors plus metadata: arch, classes, input
convention, palette). The content decides the format, never the file name.

Pickles are only ever read with ``weights_only=True``: a checkpoint is data, and a pickle that asks
to run code is refused. Everything is checked against the architecture before a model is built, so a
bad file fails with a ``CheckpointError`` that names the file and the problem.
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .convention import InputConvention, convention_from_json, convention_to_json, streams
from .models import ARCHS, FCNBase, build_model

NATIVE_FORMAT = "fcnfast"
NATIVE_FORMAT_VERSION = "1"
FORMATS = (NATIVE_FORMAT, "safetensors", "torch", "caffe")

# Trainer checkpoints keep the weights under one of these keys (tried in this order).
_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model")
# A wrapper may itself sit inside one wrapper (e.g. {"state_dict": {"model": ...}}).
_MAX_WRAPPER_DEPTH = 2
# DataParallel/DDP and torch.compile put these in front of every key.
_KEY_PREFIXES = ("module.", "_orig_mod.")

# Layers whose shape carries the class count, and which dimensions do. The first one present is
# the reference the others must agree with. ConvTranspose weights are (C_in, C_out, k, k): both.
_CLASS_DIMS = {
    "score_fr.weight": (0,), "score_fr.bias": (0,),
    "classifier.4.weight": (0,), "classifier.4.bias": (0,),
    "score_pool4.weight": (0,), "score_pool4.bias": (0,),
    "score_pool3.weight": (0,), "score_pool3.bias": (0,),
    "upscore.weight": (0, 1), "upscore.bias": (0,),
    "upscore2.weight": (0, 1), "upscore2.bias": (0,),
    "upscore16.weight": (0, 1), "upscore16.bias": (0,),
    "upscore_pool4.weight": (0, 1), "upscore_pool4.bias": (0,),
    "upscore8.weight": (0, 1), "upscore8.bias": (0,),
    "aux_classifier.4.weight": (0,), "aux_classifier.4.bias": (0,),
}

# Architectures with identical keys: detection returns the first, a hint may pick another.
_KEY_TWINS = {"fcn8s": ("fcn8s", "fcn8s_atonce")}
# pytorch-fcn's trainer records the model's class name under "arch".
_TRAINER_ARCH_NAMES = {"FCN32s": "fcn32s", "FCN16s": "fcn16s", "FCN8s": "fcn8s",
                       "FCN8sAtOnce": "fcn8s_atonce"}
# layer3 depth tells torchvision's FCN-ResNet50 from FCN-ResNet101.
_RESNET_LAYER3_BLOCKS = {6: "fcn_resnet50", 23: "fcn_resnet101"}

# How many offenders an error message lists.
_SHOW = 5

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose contents do not fit an FCN architecture."""


@dataclass
class Checkpoint:
    arch: str
    num_classes: int
    state_dict: Dict[str, torch.Tensor]  # prefixes stripped, CPU tensors
    class_names: Optional[List[str]] = None
    input_convention: Optional[InputConvention] = None
    palette: Optional[List[List[int]]] = None  # [r, g, b] per class
    format: str = "torch"  # one of FORMATS


# --- small helpers ------------------------------------------------------------------------------

def _listing(items: Sequence[str], limit: int = _SHOW) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _first_line(e: BaseException) -> str:
    """The gist of an exception message: its first sentence (torch's messages run on for lines)."""
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line.split(". ")[0]


def _refusal_reason(e: BaseException) -> str:
    """The line of torch's weights_only refusal that names the offending object."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    named = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln]
    return (named or lines or [type(e).__name__])[0]


def _valid_archs() -> str:
    return ", ".join(ARCHS)


# --- reading files ------------------------------------------------------------------------------

def _sniff(path: Path) -> str:
    """"torch", "safetensors" or "caffe", from the first bytes of the file (Caffe's protobuf has no
    magic: its ``.caffemodel`` extension names it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
    if not head:
        raise CheckpointError(f"{path}: empty file")
    if path.suffix.lower() == ".caffemodel":
        return "caffe"
    if head.startswith(b"PK"):  # torch.save's zip container
        return "torch"
    if head[0] == 0x80:  # a raw pickle: torch's legacy format
        return "torch"
    # safetensors: 8-byte little-endian header length, then the JSON header.
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    raise CheckpointError(f"{path}: not a torch or safetensors checkpoint "
                          f"(unrecognised content, first bytes {head[:8].hex()})")


def _load_torch(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and plain "
            "containers, and checkpoints are only loaded with weights_only=True (save "
            f"model.state_dict(), not the model): {_refusal_reason(e)}") from e
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for damaged files
        raise CheckpointError(f"{path}: cannot read torch checkpoint, the file is truncated or "
                              f"corrupt: {_first_line(e)}") from e


def _load_caffe(path: Path):
    """(state dict, architecture hint) of an official Caffe release (``fcnfast.caffe``)."""
    from .caffe import CaffeError, read_caffemodel

    try:
        return read_caffemodel(path)
    except CaffeError as e:
        raise CheckpointError(str(e)) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e


def _safetensors_header(path: Path) -> Tuple[dict, Dict[str, str]]:
    """The tensor entries and the metadata of a safetensors file, checked against its size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if header_len > size - 8:
            raise CheckpointError(f"{path}: corrupt safetensors header: its length field says "
                                  f"{header_len} bytes but the file has only {size} (truncated?)")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header: not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header: not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header: __metadata__ is not an object")
    data_len = size - 8 - header_len
    for name, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"{path}: corrupt safetensors header: bad entry for {name!r}")
        if offsets[1] > data_len:
            raise CheckpointError(f"{path}: truncated safetensors file: tensor {name!r} ends at "
                                  f"byte {offsets[1]} of the data but only {data_len} are there")
    return header, metadata


def _load_safetensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    _, metadata = _safetensors_header(path)
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError for anything the header check let through
        raise CheckpointError(f"{path}: cannot read safetensors file: {_first_line(e)}") from e
    return tensors, metadata


# --- turning payloads into clean state dicts ----------------------------------------------------

def _unwrap(payload, where: str) -> Tuple[dict, Optional[str]]:
    """The state dict inside a trainer checkpoint, and the "arch" the trainer recorded (if any)."""
    arch_hint = None
    for _ in range(_MAX_WRAPPER_DEPTH + 1):
        if not isinstance(payload, dict):
            raise CheckpointError(f"{where}: holds a {type(payload).__name__}, not a state dict "
                                  "(a dict of tensors)")
        if arch_hint is None and isinstance(payload.get("arch"), str):
            arch_hint = payload["arch"]
        inner = next((payload[k] for k in _WRAPPER_KEYS if isinstance(payload.get(k), dict)), None)
        if inner is None:
            return payload, arch_hint
        payload = inner
    return payload, arch_hint  # too deep: the value check below names the dict it finds


def _strip_key(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _KEY_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def clean_state_dict(state_dict: dict, where: str) -> Dict[str, torch.Tensor]:
    """Prefixes stripped; every key a string and every value a tensor."""
    if not state_dict:
        raise CheckpointError(f"{where}: the state dict is empty")
    clean: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{where}: state dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: value of {key!r} is a {type(value).__name__}, not a "
                                  "tensor (not a state dict, or an unknown wrapper)")
        name = _strip_key(key)
        if name in clean:
            raise CheckpointError(f"{where}: keys collide after stripping prefixes: {name!r}")
        clean[name] = value
    return clean


# --- architecture detection -------------------------------------------------------------------

def _class_count(state_dict: Dict[str, torch.Tensor], where: str, head: str = "") -> int:
    """The class count every class-carrying layer (of the head whose layers carry the suffix
    ``head``) agrees on."""
    if not head and "score_fr_sem.weight" in state_dict:
        head = "_sem"  # SIFT Flow: num_classes is the semantic head's
    counts = []
    for key, dims in _CLASS_DIMS.items():
        if head:
            layer, _, kind = key.rpartition(".")
            key = f"{layer}{head}.{kind}"
        tensor = state_dict.get(key)
        if tensor is not None:
            counts += [(key, tensor.shape[d]) for d in dims if tensor.dim() > d]
    if not counts:
        raise CheckpointError(f"{where}: no class-scoring layer found (looked for score_fr.weight "
                              "and classifier.4.weight)")
    ref_key, ref = counts[0]
    disagree = {}
    for key, n in counts:
        if n != ref and key not in disagree:
            disagree[key] = f"{key} has {n} (shape {tuple(state_dict[key].shape)})"
    if disagree:
        raise CheckpointError(f"{where}: shapes disagree: {ref_key} has {ref} classes, "
                              + ", ".join(disagree.values()))
    return int(ref)


def _resnet_arch(keys, where: str) -> str:
    blocks = {k.split(".")[2] for k in keys if k.startswith("backbone.layer3.")}
    depth = len(blocks)
    if depth not in _RESNET_LAYER3_BLOCKS:
        known = ", ".join(f"{a} has {n}" for n, a in _RESNET_LAYER3_BLOCKS.items())
        raise CheckpointError(f"{where}: ResNet keys with {depth} blocks in layer3 ({known})")
    return _RESNET_LAYER3_BLOCKS[depth]


def _vgg_arch(keys) -> str:
    def has(layer):
        return any(k.startswith(layer + sfx + ".") for k in keys)

    # SIFT Flow's two heads carry _sem / _geo suffixes (the Caffe release's layer names).
    sfx, prefix = ("_sem", "siftflow_") if any(k.startswith("score_fr_sem.") for k in keys) else ("", "")
    if has("score_pool3") or has("upscore_pool4") or has("upscore8"):
        return prefix + "fcn8s"
    if has("score_pool4") or has("upscore16"):
        return prefix + "fcn16s"
    return prefix + "fcn32s"


def _arch_from_keys(state_dict: Dict[str, torch.Tensor], where: str) -> Optional[str]:
    keys = list(state_dict)
    if "conv1_1.weight" in state_dict:
        return _vgg_arch(keys)
    if "conv1_1color.weight" in state_dict and "conv1_1hha.weight" in state_dict:
        return "nyud_fcn32s_color_hha"
    if any(k.startswith("inception_") for k in keys) or "conv1.7x7_s2.weight" in state_dict:
        return "fcn_googlenet"
    if any(k.startswith("backbone.layer") for k in keys):
        return _resnet_arch(keys, where)
    if "conv1.weight" in state_dict and "fc6.weight" in state_dict:
        return "fcn_alexnet"
    return None


def _detect(state_dict: Dict[str, torch.Tensor], where: str) -> Tuple[str, int]:
    arch = _arch_from_keys(state_dict, where)
    if arch is None:
        raise CheckpointError(
            f"{where}: unknown architecture: {_plural(len(state_dict), 'key')} such as "
            f"{_listing(list(state_dict))} match no FCN; pass arch= one of {_valid_archs()}")
    if arch not in ARCHS:
        raise CheckpointError(f"{where}: keys look like {arch}, which this build of fcnfast does "
                              f"not have; known: {_valid_archs()}")
    return arch, _class_count(state_dict, where)


def detect_arch(state_dict: Dict[str, torch.Tensor]) -> Tuple[str, int]:
    """(arch, num_classes) of a state dict, from its keys and shapes.

    FCN-8s and FCN-8s at-once have identical keys; such a state dict is reported as "fcn8s". Pass
    ``arch="fcn8s_atonce"`` to ``read_checkpoint``/``load_model`` for the at-once net.
    """
    return _detect(clean_state_dict(state_dict, "state dict"), "state dict")


def _resolve_arch(state_dict, arch: Optional[str], arch_hint: Optional[str],
                  where: str) -> Tuple[str, int]:
    """The architecture to build: ``arch`` if given, else detection refined by a trainer's hint."""
    if arch is not None:
        if arch not in ARCHS:
            raise CheckpointError(f"{where}: unknown arch={arch!r}; valid: {_valid_archs()}")
        return arch, _class_count(state_dict, where)
    detected, num_classes = _detect(state_dict, where)
    hinted = _TRAINER_ARCH_NAMES.get(arch_hint, arch_hint)
    if hinted in _KEY_TWINS.get(detected, ()) and hinted in ARCHS:
        detected = hinted  # keys cannot tell these apart, the trainer's record can
    return detected, num_classes


# --- validation against the architecture ------------------------------------------------------

# VGG nets may be narrowed (``widths``, ``fc_width``): the first conv of each block and fc6 say how.
_VGG_WIDTH_KEYS = tuple(f"conv{b}_1.weight" for b in range(1, 6))


def _vgg_widths(state_dict: Dict[str, torch.Tensor], stream: str = "") -> dict:
    """The ``widths``/``fc_width`` a VGG state dict was built with (of the trunk whose layers carry
    the suffix ``stream``); {} (the defaults) when its tensors do not say, so the fit check reports
    what is missing or malformed."""
    keys = [k.replace(".weight", stream + ".weight") for k in _VGG_WIDTH_KEYS + ("fc6.weight",)]
    tensors = [state_dict.get(k) for k in keys]
    if any(not isinstance(t, torch.Tensor) or t.dim() == 0 for t in tensors):
        return {}
    *widths, fc6 = (int(t.shape[0]) for t in tensors)
    return {"widths": tuple(widths), "fc_width": fc6}


def model_kwargs(arch: str, state_dict: Dict[str, torch.Tensor]) -> dict:
    if arch.startswith("fcn_resnet"):
        return {"aux": any(k.startswith("aux_classifier.") for k in state_dict)}
    if arch in ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"):
        return _vgg_widths(state_dict)
    if arch == "nyud_fcn32s_color_hha":
        return _vgg_widths(state_dict, "color")
    if arch.startswith("siftflow_"):
        geo = state_dict.get("score_fr_geo.weight")
        heads = {"head_classes": (int(geo.shape[0]),)} if isinstance(geo, torch.Tensor) and geo.dim() else {}
        return {**_vgg_widths(state_dict), **heads}
    return {}


@lru_cache(maxsize=32)
def _expected_entries(arch: str, num_classes: int, kwargs: Tuple[Tuple[str, object], ...]):
    """{key: (shape, dtype)} of the model's state dict, from a weightless (meta) build."""
    try:
        with torch.device("meta"):
            model = build_model(arch, num_classes, **dict(kwargs))
    except (NotImplementedError, RuntimeError):  # a constructor that needs real tensors
        model = build_model(arch, num_classes, **dict(kwargs))
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def _check_fits(state_dict: Dict[str, torch.Tensor], arch: str, num_classes: int, where: str):
    """Raise unless ``state_dict`` loads into ``arch`` with exactly its keys, shapes and kinds."""
    kwargs = model_kwargs(arch, state_dict)
    expected = _expected_entries(arch, num_classes, tuple(sorted(kwargs.items())))
    # torch fills a missing BatchNorm counter itself (older torchvision files lack it).
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape, wrong_kind = [], []
    for key, tensor in state_dict.items():
        if key not in expected:
            continue
        shape, dtype = expected[key]
        if tuple(tensor.shape) != shape:
            wrong_shape.append(f"{key} {tuple(tensor.shape)} (expected {shape})")
        elif dtype.is_floating_point and not tensor.is_floating_point():
            wrong_kind.append(f"{key} is {tensor.dtype}")
    problems = []
    if missing:
        problems.append(f"missing {_plural(len(missing), 'key')}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {_plural(len(unexpected), 'key')}: {_listing(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatch in {len(wrong_shape)}: {_listing(wrong_shape)}")
    if wrong_kind:
        problems.append(f"not floating point where weights are expected: {_listing(wrong_kind)}")
    if problems:
        raise CheckpointError(f"{where}: does not fit {arch} with {num_classes} classes: "
                              + "; ".join(problems))


# --- native metadata ----------------------------------------------------------------------------

def _palette_rows(palette, what: str) -> List[List[int]]:
    """``palette`` as a list of [r, g, b] ints in 0..255; ValueError naming ``what`` otherwise."""
    try:
        arr = np.asarray(palette)
    except Exception as e:
        raise ValueError(f"{what}: not an array of RGB triples ({e})") from e
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{what}: must be (N, 3) RGB values, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"{what}: RGB values must be integers in 0..255")
    return arr.astype(int).tolist()


def _class_name_list(names, num_classes: int, what: str) -> List[str]:
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what}: class names must be a list of strings")
    names = list(names)
    if len(names) != num_classes:
        raise ValueError(f"{what}: {len(names)} class names for {num_classes} classes")
    return names


def _json_field(metadata: Dict[str, str], name: str, where: str):
    raw = metadata.get(name)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: metadata field {name!r} is not valid JSON ({e})") from e


def _native_metadata(metadata: Dict[str, str], where: str):
    """(arch, num_classes, class_names, input_convention, palette) recorded in a native file."""
    version = metadata.get("format_version")
    if version != NATIVE_FORMAT_VERSION:
        raise CheckpointError(f"{where}: unsupported fcnfast format_version {version!r} "
                              f"(this version reads {NATIVE_FORMAT_VERSION!r})")
    arch = metadata.get("arch")
    if arch not in ARCHS:
        raise CheckpointError(f"{where}: metadata names unknown arch {arch!r}; "
                              f"known: {_valid_archs()}")
    try:
        num_classes = int(metadata.get("num_classes", ""))
    except ValueError:
        raise CheckpointError(f"{where}: metadata num_classes {metadata.get('num_classes')!r} "
                              "is not an integer") from None
    names = _json_field(metadata, "class_names", where)
    convention = _json_field(metadata, "input", where)
    palette = _json_field(metadata, "palette", where)
    try:
        names = None if names is None else _class_name_list(names, num_classes, "metadata")
        convention = None if convention is None else convention_from_json(convention)
        palette = None if palette is None else _palette_rows(palette, "metadata palette")
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{where}: bad metadata: {e}") from e
    return arch, num_classes, names, convention, palette


def _native_checkpoint(state_dict, metadata, arch: Optional[str], where: str) -> Checkpoint:
    recorded_arch, num_classes, names, convention, palette = _native_metadata(metadata, where)
    arch = arch or recorded_arch
    if arch not in ARCHS:
        raise CheckpointError(f"{where}: unknown arch={arch!r}; valid: {_valid_archs()}")
    found = _class_count(state_dict, where)
    if found != num_classes:
        raise CheckpointError(f"{where}: metadata says num_classes={num_classes} but the tensors "
                              f"have {found} classes")
    _check_fits(state_dict, arch, num_classes, where)
    return Checkpoint(arch, num_classes, state_dict, names, convention, palette, NATIVE_FORMAT)


# --- public API ---------------------------------------------------------------------------------

def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of any supported file, FCN or not (e.g. an ImageNet classifier to convolutionalise),
    unwrapped and with ``module.``/``_orig_mod.`` prefixes removed; never unpickles code."""
    path = Path(os.fspath(path))
    kind = _sniff(path)
    if kind == "caffe":
        raw, _ = _load_caffe(path)
    elif kind == "safetensors":
        raw, _ = _load_safetensors(path)
    else:
        raw, _ = _unwrap(_load_torch(path), str(path))
    return clean_state_dict(raw, str(path))


def read_checkpoint(path: PathLike, arch: Optional[str] = None) -> Checkpoint:
    """Read and check a checkpoint file of any supported format.

    The architecture and class count are detected from the keys and shapes (native files record
    them). ``arch`` overrides detection and is checked against the keys. FCN-8s and FCN-8s at-once
    have identical keys: such a file is read as "fcn8s" unless ``arch="fcn8s_atonce"`` is passed
    (or pytorch-fcn's trainer recorded ``"arch": "FCN8sAtOnce"`` in it).
    """
    path = Path(os.fspath(path))
    where = str(path)
    kind = _sniff(path)
    if kind == "caffe":
        raw, arch_hint = _load_caffe(path)
        state_dict, fmt = clean_state_dict(raw, where), "caffe"
    elif kind == "safetensors":
        raw, metadata = _load_safetensors(path)
        state_dict = clean_state_dict(raw, where)
        if metadata.get("format") == NATIVE_FORMAT:
            return _native_checkpoint(state_dict, metadata, arch, where)
        fmt, arch_hint = "safetensors", None
    else:
        raw, arch_hint = _unwrap(_load_torch(path), where)
        state_dict, fmt = clean_state_dict(raw, where), "torch"
    arch, num_classes = _resolve_arch(state_dict, arch, arch_hint, where)
    _check_fits(state_dict, arch, num_classes, where)
    return Checkpoint(arch, num_classes, state_dict, format=fmt)


def load_model(path_or_checkpoint: Union[PathLike, Checkpoint],
               arch: Optional[str] = None) -> Tuple[FCNBase, Checkpoint]:
    """(model in eval mode with the checkpoint's weights, the Checkpoint it came from)."""
    if isinstance(path_or_checkpoint, Checkpoint):
        ckpt, where = path_or_checkpoint, f"checkpoint ({path_or_checkpoint.format})"
        if arch is not None and arch != ckpt.arch:
            arch, _ = _resolve_arch(ckpt.state_dict, arch, None, where)
            ckpt = replace(ckpt, arch=arch)
        # A Checkpoint may have been built or edited by hand: check it like a file.
        _check_fits(ckpt.state_dict, ckpt.arch, ckpt.num_classes, where)
    else:
        ckpt = read_checkpoint(path_or_checkpoint, arch)
        where = os.fspath(path_or_checkpoint)
    # Built without memory (meta) and handed the checkpoint's tensors: a random init of VGG16's
    # 134M parameters that the weights then overwrite costs more than the whole read.
    with torch.device("meta"):
        model = build_model(ckpt.arch, ckpt.num_classes, **model_kwargs(ckpt.arch, ckpt.state_dict))
    weights = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    for key in model.state_dict():
        if key not in weights and key.endswith("num_batches_tracked"):
            weights[key] = torch.zeros((), dtype=torch.long)  # older torchvision files lack it
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not load into {ckpt.arch}: "
                              f"{_first_line(e)}") from e
    if ckpt.input_convention is not None:
        model.input_convention = ckpt.input_convention  # what the weights were trained with
    return model.eval(), ckpt


def _bare_model(model: nn.Module) -> nn.Module:
    """The model inside DataParallel/DDP and torch.compile wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _tensors_for_saving(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Contiguous CPU tensors, none sharing storage (safetensors refuses tied tensors)."""
    tensors, storages = {}, set()
    for key, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in storages or t.numel() == 0:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        tensors[key] = t
    return tensors


def save_native(model: nn.Module, path: PathLike, *, class_names: Optional[Sequence[str]] = None,
                input_convention: Optional[InputConvention] = None, palette=None) -> None:
    """Write ``model`` in fcnfast's native format: safetensors with arch, classes and conventions.

    ``input_convention`` defaults to the model's own. The file is written next to ``path`` and
    renamed into place, so a failed write never leaves a half file under that name.
    """
    model = _bare_model(model)
    arch = getattr(model, "arch", None)
    if arch not in ARCHS or not isinstance(model, ARCHS[arch]):
        raise ValueError(f"save_native needs an fcnfast reference model (one of {_valid_archs()}), "
                         f"got {type(model).__name__}")
    num_classes = model.num_classes
    if class_names is not None:
        class_names = _class_name_list(class_names, num_classes, "save_native")
    if input_convention is None:
        input_convention = model.input_convention
    if not all(isinstance(c, InputConvention) for c in streams(input_convention)):
        raise ValueError(f"input_convention must be an InputConvention (or a tuple of them, one per "
                         f"input stream), got {type(input_convention).__name__}")
    if palette is not None:
        palette = _palette_rows(palette, "save_native palette")
        if len(palette) < num_classes:
            raise ValueError(f"palette has {len(palette)} colours for {num_classes} classes")
    metadata = {
        "format": NATIVE_FORMAT,
        "format_version": NATIVE_FORMAT_VERSION,
        "arch": arch,
        "num_classes": str(num_classes),
        "class_names": json.dumps(class_names),
        "input": json.dumps(convention_to_json(input_convention)),
        "palette": json.dumps(palette),
    }
    _write_safetensors(_tensors_for_saving(model.state_dict()), Path(os.fspath(path)), metadata)


def _write_safetensors(tensors, path: Path, metadata: Dict[str, str]) -> None:
    from safetensors.torch import save_file

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()

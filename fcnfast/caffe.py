"""The official Caffe releases (``*.caffemodel``) read without Caffe: a bounded protobuf wire reader.

A ``.caffemodel`` is a binary ``NetParameter``: its ``layer`` list (field 100; each a
``LayerParameter`` with name 1, type 2, blobs 7) or the legacy V1 ``layers`` list (field 2; name 4,
type 5 as an enum, blobs 6). A ``BlobProto`` holds its shape (field 7, a ``BlobShape`` of packed
int64 ``dim`` 1) or the legacy num/channels/height/width (1–4), and float ``data`` (5), packed or
one fixed32 field per value.

Safe and fast on a 500 MB VGG16 file: every length is checked against the bytes that are left
before anything is sliced or allocated (a truncated, malformed or hostile file is a
``CheckpointError`` naming the offset, never a hang or a huge allocation), and the float data is
bulk-copied with numpy, packed or not.

Layer names map onto the reference models' parameter names (``conv1_1`` → ``conv1_1.weight`` /
``.bias``; GoogLeNet's ``inception_3a/1x1`` → ``inception_3a.1x1``); FCN-8s at-once's
``scale_pool4``/``scale_pool3`` Scale layers select ``fcn8s_atonce`` and are checked against its
fixed scales.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

# Wire types.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
# NetParameter fields.
_NET_LAYER, _NET_LAYERS_V1 = 100, 2
# LayerParameter / V1LayerParameter fields: (name, type, blobs).
_LAYER_FIELDS = {_NET_LAYER: (1, 2, 7), _NET_LAYERS_V1: (4, 5, 6)}
# BlobProto fields.
_BLOB_SHAPE, _BLOB_DATA, _BLOB_DOUBLE_DATA = 7, 5, 8
_BLOB_LEGACY = (1, 2, 3, 4)  # num, channels, height, width
_MAX_DIMS = 8
# V1LayerParameter.LayerType values of the layers that carry weights in the FCN releases.
_V1_TYPES = {4: "Convolution", 39: "Deconvolution", 14: "InnerProduct"}
# FCN-8s at-once's fixed feature scales (voc-fcn8s-atonce/net.py).
ATONCE_SCALES = {"scale_pool4": 0.01, "scale_pool3": 0.0001}


class CaffeError(ValueError):
    """A .caffemodel that cannot be read (wrapped into CheckpointError by fcnfast.checkpoint)."""


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: List[np.ndarray] = field(default_factory=list)


class _Reader:
    """Fields of one message in ``buf[start:end]``; every read is bounded by ``end``."""

    def __init__(self, buf: memoryview, start: int, end: int, where: str):
        self.buf, self.pos, self.end, self.where = buf, start, end, where

    def _fail(self, what: str):
        raise CaffeError(f"{self.where}: {what} at byte {self.pos}")

    def varint(self) -> int:
        value, shift, buf = 0, 0, self.buf
        for _ in range(10):
            if self.pos >= self.end:
                self._fail("truncated varint")
            b = buf[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
        self._fail("varint longer than 10 bytes")

    def fields(self):
        """(field number, wire type, payload start, payload end) of each field, in order."""
        while self.pos < self.end:
            tag = self.varint()
            number, wire = tag >> 3, tag & 7
            if number == 0:
                self._fail("field number 0")
            if wire == _VARINT:
                start = self.pos
                self.varint()
            elif wire == _FIXED64:
                start = self.pos
                self.pos += 8
            elif wire == _FIXED32:
                start = self.pos
                self.pos += 4
            elif wire == _LEN:
                n = self.varint()
                start = self.pos
                if n > self.end - start:
                    self._fail(f"field {number} declares {n} bytes but {self.end - start} are left")
                self.pos += n
            else:
                self._fail(f"unsupported wire type {wire} (field {number})")
            if self.pos > self.end:
                self._fail(f"field {number} runs past the end")
            yield number, wire, start, self.pos

    def sub(self, start: int, end: int) -> "_Reader":
        return _Reader(self.buf, start, end, self.where)

    def value_varint(self, start: int) -> int:
        return self.sub(start, self.end).varint()


def _text(buf: memoryview, start: int, end: int, where: str) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise CaffeError(f"{where}: a layer name at byte {start} is not UTF-8") from None


def _floats(r: _Reader, first: int, wire: int, start: int, end: int, pieces: list) -> None:
    """Append the float32 values of one ``data`` field (packed: the whole payload)."""
    if wire == _LEN:
        if (end - start) % 4:
            r._fail(f"packed float data of {end - start} bytes (not a multiple of 4)")
        pieces.append(np.frombuffer(r.buf, dtype="<f4", count=(end - start) // 4, offset=start))
    elif wire == _FIXED32:
        pieces.append(np.frombuffer(r.buf, dtype="<f4", count=1, offset=start))
    else:
        r._fail(f"float data with wire type {wire}")


def _unpacked_run(r: _Reader, tag_byte: int) -> Optional[np.ndarray]:
    """After one unpacked fixed32 value: the longest run of further ones (tag byte + 4 bytes each)
    as float32, read in one numpy pass; advances the reader past them."""
    left = (r.end - r.pos) // 5
    if left == 0:
        return None
    records = np.frombuffer(r.buf, dtype=np.uint8, count=left * 5, offset=r.pos).reshape(left, 5)
    not_tag = np.flatnonzero(records[:, 0] != tag_byte)
    n = int(not_tag[0]) if not_tag.size else left
    if n == 0:
        return None
    values = np.ascontiguousarray(records[:n, 1:]).view("<f4").reshape(n)
    r.pos += n * 5
    return values


def _blob(r: _Reader, where: str) -> np.ndarray:
    dims: Optional[List[int]] = None
    legacy = {}
    pieces: List[np.ndarray] = []
    doubles: List[np.ndarray] = []
    fields = r.fields()
    for number, wire, start, end in fields:
        if number == _BLOB_SHAPE and wire == _LEN:
            dims = []
            for n2, w2, s2, e2 in r.sub(start, end).fields():
                if n2 != 1:
                    continue
                if w2 == _LEN:  # packed int64
                    packed = r.sub(s2, e2)
                    while packed.pos < packed.end:
                        dims.append(packed.varint())
                        if len(dims) > _MAX_DIMS:
                            r._fail(f"blob shape with more than {_MAX_DIMS} dims")
                elif w2 == _VARINT:
                    dims.append(r.sub(s2, e2).varint())
                else:
                    r._fail(f"blob shape dim with wire type {w2}")
        elif number in _BLOB_LEGACY and wire == _VARINT:
            legacy[number] = r.sub(start, end).varint()
        elif number == _BLOB_DATA:
            _floats(r, number, wire, start, end, pieces)
            if wire == _FIXED32:  # Caffe writes the rest the same way: read them in one go
                run = _unpacked_run(r, (_BLOB_DATA << 3) | _FIXED32)
                if run is not None:
                    pieces.append(run)
        elif number == _BLOB_DOUBLE_DATA and wire == _LEN:
            if (end - start) % 8:
                r._fail("packed double data not a multiple of 8 bytes")
            doubles.append(np.frombuffer(r.buf, dtype="<f8", count=(end - start) // 8, offset=start))
    if dims is None:
        dims = [legacy.get(k, 0) for k in _BLOB_LEGACY]
        # Legacy blobs pad their shape with leading 1s (a bias is 1×1×1×N).
        while len(dims) > 1 and dims[0] == 1:
            dims.pop(0)
    data = np.concatenate(pieces) if pieces else (
        np.concatenate(doubles).astype(np.float32) if doubles else np.zeros(0, np.float32))
    count = 1
    for d in dims:
        count *= d  # Python ints: an absurd shape cannot overflow into a match
    if any(d < 0 for d in dims) or count != data.size:
        raise CaffeError(f"{where}: blob shape {tuple(dims)} holds {count} values but "
                         f"{data.size} are stored")
    return data.reshape(dims)


def read_layers(data, where: str = "caffemodel") -> List[CaffeLayer]:
    """The layers of a binary NetParameter (bytes or a buffer), with their blobs as float32 arrays
    (views of ``data`` where the floats are packed)."""
    buf = memoryview(data)
    top = _Reader(buf, 0, len(buf), where)
    layers: List[CaffeLayer] = []
    for number, wire, start, end in top.fields():
        if number not in _LAYER_FIELDS or wire != _LEN:
            continue
        name_f, type_f, blobs_f = _LAYER_FIELDS[number]
        layer = CaffeLayer("", "")
        lr = top.sub(start, end)
        for n2, w2, s2, e2 in lr.fields():
            if n2 == name_f and w2 == _LEN:
                layer.name = _text(buf, s2, e2, where)
            elif n2 == type_f:
                if w2 == _LEN:
                    layer.type = _text(buf, s2, e2, where)
                elif w2 == _VARINT:
                    code = lr.sub(s2, e2).varint()
                    layer.type = _V1_TYPES.get(code, f"V1 type {code}")
            elif n2 == blobs_f and w2 == _LEN:
                layer.blobs.append(_blob(lr.sub(s2, e2), f"{where}: layer {layer.name or '?'}"))
        layers.append(layer)
    if not layers:
        raise CaffeError(f"{where}: no layers found: not a Caffe NetParameter (.caffemodel)")
    return layers


def _check_scale(layer: CaffeLayer, where: str) -> None:
    want = ATONCE_SCALES[layer.name]
    if not layer.blobs or layer.blobs[0].size == 0:
        raise CaffeError(f"{where}: Scale layer {layer.name} has no scale blob")
    found = layer.blobs[0]
    if not np.allclose(found, want, rtol=1e-6, atol=0):
        raise CaffeError(f"{where}: {layer.name} scales by {float(found.flat[0]):g}, not FCN-8s "
                         f"at-once's {want:g}; this net is not supported")


def state_dict_from_layers(layers: List[CaffeLayer], where: str = "caffemodel"
                           ) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """(state dict in the reference models' names, architecture hint or None)."""
    state: Dict[str, torch.Tensor] = {}
    hint = None
    for layer in layers:
        if layer.name in ATONCE_SCALES:
            _check_scale(layer, where)
            hint = "fcn8s_atonce"
            continue
        if not layer.blobs:
            continue
        if len(layer.blobs) > 2:
            raise CaffeError(f"{where}: layer {layer.name} ({layer.type}) has {len(layer.blobs)} "
                             "blobs; FCN layers have a weight and at most a bias")
        prefix = layer.name.replace("/", ".")
        if prefix in {k.rsplit(".", 1)[0] for k in state}:
            raise CaffeError(f"{where}: layer {layer.name} appears twice")
        weight = layer.blobs[0]
        state[f"{prefix}.weight"] = torch.from_numpy(np.array(weight, dtype=np.float32))
        if len(layer.blobs) == 2:
            state[f"{prefix}.bias"] = torch.from_numpy(
                np.array(layer.blobs[1], dtype=np.float32).reshape(-1))
    if not state:
        raise CaffeError(f"{where}: the net has no weights (a deploy.prototxt-only net?)")
    return state, hint


def read_caffemodel(path, where: Optional[str] = None
                    ) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """(state dict, architecture hint) of a ``.caffemodel`` file."""
    where = where or str(path)
    with open(path, "rb") as f:
        data = f.read()
    return state_dict_from_layers(read_layers(data, where), where)


# --- the text prototxt (deploy.prototxt / train.prototxt): optional, for checking geometry -------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _unescape(s: str) -> str:
    """The C escapes protobuf's text format writes inside strings."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append(_ESCAPES.get(s[i + 1], s[i + 1]))
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _tokens(text: str, where: str):
    """Tokens of protobuf's text format: names, numbers, quoted strings, ':', '{', '}'."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":  # a comment to the end of the line
            while i < n and text[i] != "\n":
                i += 1
        elif c in ":{}":
            yield c, line
            i += 1
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise CaffeError(f"{where}:{line}: unterminated string")
            yield ("str", _unescape(text[i + 1:j])), line
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ":{}#\"'":
                j += 1
            yield ("word", text[i:j]), line
            i = j


def _value(word: str):
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(word, word)  # an enum name stays a string


def parse_prototxt(text: str, where: str = "prototxt") -> dict:
    """A text-format message as a dict; every field maps to the list of its values (repeated or
    not), nested messages to dicts: ``net["layer"][0]["convolution_param"][0]["kernel_size"]``."""
    stack = [{}]
    tokens = iter(_tokens(text, where))
    for tok, line in tokens:
        if tok == "}":
            if len(stack) == 1:
                raise CaffeError(f"{where}:{line}: unbalanced '}}'")
            stack.pop()
            continue
        if not (isinstance(tok, tuple) and tok[0] == "word"):
            raise CaffeError(f"{where}:{line}: expected a field name, got {tok!r}")
        name = tok[1]
        nxt, line = next(tokens, (None, line))
        if nxt == ":":
            nxt, line = next(tokens, (None, line))
        if nxt == "{":
            child = {}
            stack[-1].setdefault(name, []).append(child)
            stack.append(child)
        elif isinstance(nxt, tuple):
            value = nxt[1] if nxt[0] == "str" else _value(nxt[1])
            stack[-1].setdefault(name, []).append(value)
        else:
            raise CaffeError(f"{where}:{line}: field {name} has no value")
    if len(stack) != 1:
        raise CaffeError(f"{where}: {len(stack) - 1} unclosed '{{'")
    return stack[0]


def _first(msg: dict, field: str, default=None):
    values = msg.get(field)
    return values[0] if values else default


def prototxt_geometry(net: dict) -> Dict[str, dict]:
    """Per layer name: what fixes the geometry — a (De)Convolution's kernel, stride, pad and
    outputs, a Crop's offset (Caffe's crop layer, axis 2), a Scale layer's constant."""
    layers = net.get("layer") or net.get("layers") or []
    out = {}
    for layer in layers:
        name, kind = _first(layer, "name", ""), str(_first(layer, "type", ""))
        info = {"type": kind}
        conv = _first(layer, "convolution_param")
        if conv is not None:
            info.update(kernel=_first(conv, "kernel_size"), stride=_first(conv, "stride", 1),
                        pad=_first(conv, "pad", 0), outputs=_first(conv, "num_output"))
        crop_p = _first(layer, "crop_param")
        if crop_p is not None or kind.lower() == "crop":
            info["offset"] = _first(crop_p or {}, "offset", 0)
        scale = _first(layer, "scale_param")
        if scale is not None:
            filler = _first(scale, "filler") or {}
            info["value"] = _first(filler, "value")
        out[name] = info
    return out


def check_geometry(model, net: dict, where: str = "prototxt") -> None:
    """Raise CaffeError unless the reference ``model`` has the prototxt's geometry: each
    (de)convolution's kernel and stride (and a convolution's pad), each crop's offset (matched by
    the layer it crops, its first bottom), each Scale layer's constant."""
    geometry = prototxt_geometry(net)
    modules = dict(model.named_modules())
    offsets = getattr(model, "crop_offsets", {})
    problems = []
    for layer in net.get("layer") or net.get("layers") or []:
        name = _first(layer, "name", "")
        info = geometry.get(name, {})
        module = modules.get(name.replace("/", "."))
        if info.get("kernel") is not None and module is not None and hasattr(module, "kernel_size"):
            got = (module.kernel_size[0], module.stride[0])
            want = (info["kernel"], info["stride"])
            if got != want:
                problems.append(f"{name}: kernel/stride {want} in the prototxt, {got} in the model")
            pad = module.padding[0] if isinstance(module.padding, tuple) else module.padding
            if info["type"] == "Convolution" and pad != info["pad"]:
                problems.append(f"{name}: pad {info['pad']} in the prototxt, {pad} in the model")
        if "offset" in info:
            bottoms = layer.get("bottom") or []
            cropped = str(bottoms[0]).replace("/", ".") if bottoms else None
            if cropped in offsets and offsets[cropped] != info["offset"]:
                problems.append(f"{name}: crops {cropped} at {info['offset']} in the prototxt, "
                                f"{offsets[cropped]} in the model")
        if info.get("value") is not None and name in ATONCE_SCALES:
            if abs(info["value"] - ATONCE_SCALES[name]) > 1e-12:
                problems.append(f"{name}: scale {info['value']} in the prototxt, "
                                f"{ATONCE_SCALES[name]} in the model")
    if problems:
        raise CaffeError(f"{where} does not match {model.arch}: " + "; ".join(problems))

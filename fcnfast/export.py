"""ONNX export: an FCN as one standard model file for onnxruntime, TensorRT, OpenVINO and the like.

The exported graph is the reference model between the deployment's input and output: by default
uint8 RGB frames in (the model's preprocessing inside the graph) and the per-pixel argmax out, so a
runtime needs nothing of fcnfast. PyTorch's current exporter (``torch.export``, ``dynamo=True``)
traces the model with symbolic N, H and W: the Caffe crops (offsets from the geometry, window sizes
from the input) and FCN-ResNet's bilinear resize follow the input size in the graph instead of
being baked in at the example's size, and the fixed bilinear deconvolutions stay the trained
weights, exactly. After writing, the file is run with onnxruntime (where installed) at a size it
was not traced at and compared with the reference.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import _ext, contract
from .convention import streams
from .engine.compare import firm_pixels
from .images import model_scores, to_network_input

INPUTS = ("uint8", "float")
OUTPUTS = ("labels", "scores")
EXPORT_DTYPES = (torch.float32, torch.float16)
# The traced example's size when the graph is dynamic: odd and unequal, so that no size is
# mistaken for a constant; the check after export runs another one.
_EXAMPLE_SIZE = (67, 83)
_CHECK_SIZE = (61, 97)


@dataclass(frozen=True)
class OnnxExport:
    """What ``export_onnx`` wrote."""

    path: str
    arch: str
    inputs: Tuple[str, ...]  # graph input names, in order
    outputs: Tuple[str, ...]  # graph output names, in order
    dtype: torch.dtype
    dynamic: bool
    verified: str  # how the file was checked against the reference, or why it was not

    def __str__(self) -> str:
        dt = str(self.dtype).replace("torch.", "")
        shape = "dynamic N, H, W" if self.dynamic else "fixed size"
        return (f"{self.path}: {self.arch}, {dt}, inputs {', '.join(self.inputs)} -> outputs "
                f"{', '.join(self.outputs)} ({shape}); {self.verified}")


class DeployedFCN(nn.Module):
    """A reference FCN between a deployment's input and output: what ``export_onnx`` traces.

    ``input="uint8"``: (N, H, W, 3) RGB frames per input image of the model (NYUDv2: colour, then
    HHA), normalised by the model's convention in the graph; ``"float"``: the preprocessed
    (N, 3k, H, W) tensor. ``output="labels"``: (N, H, W) per head, in ``contract.label_dtype``;
    ``"scores"``: (N, C, H, W) class scores per head.
    """

    def __init__(self, model: nn.Module, convention, input: str = "uint8", output: str = "labels",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model, self.convention = model, convention
        self.input, self.output, self.dtype = input, output, dtype
        self.heads = tuple(getattr(model, "heads", ()))

    def forward(self, x, hha=None):
        if self.input == "uint8":
            frames = x if hha is None else torch.cat([x, hha], -1)
            x = to_network_input(frames, self.convention, frames.device, self.dtype)
        scores = self.model(x)
        per_head = [scores[h] for h in self.heads] if isinstance(scores, dict) else [scores]
        if self.output == "labels":
            per_head = [contract.argmax_labels(s) for s in per_head]
        return per_head[0] if len(per_head) == 1 else tuple(per_head)


def _resolve(model):
    """(reference model, input convention) of what ``export_onnx`` was given."""
    from .api import Segmenter, load
    from .models import FCNBase

    if isinstance(model, Segmenter):
        return model.model, model.input_convention
    if isinstance(model, FCNBase):
        return model, model.input_convention
    if isinstance(model, (str, os.PathLike)):
        seg = load(model, device="cpu", backend="torch")
        return seg.model, seg.input_convention
    raise TypeError(f"model must be a checkpoint path, a release name, 'default', a Segmenter or an "
                    f"fcnfast reference model; got {type(model).__name__}")


def _names(model, input: str, output: str):
    n_streams = len(streams(model.input_convention)) if hasattr(model, "input_convention") else 1
    image_names = tuple(getattr(model, "input_names", ("rgb",)))[:n_streams]
    if input == "uint8":
        inputs = ("frames",) + tuple(image_names[1:])
    else:
        inputs = ("x",)
    heads = tuple(getattr(model, "heads", ()))
    outputs = tuple(f"{output}_{h}" for h in heads) if heads else (output,)
    return inputs, outputs


def _check_args(input, output, dtype, opset, size, batch_size, dynamic):
    if input not in INPUTS:
        raise ValueError(f"input must be one of {', '.join(INPUTS)}; got {input!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    if dtype not in EXPORT_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float16 (the types ONNX runtimes "
                        f"run), got {dtype}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 18):
        raise ValueError(f"opset must be an int >= 18 (the exporter's oldest), got {opset!r}")
    if size is None:
        if not dynamic:
            raise ValueError("dynamic=False fixes the input size: give size=(H, W)")
        size = _EXAMPLE_SIZE
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TypeError(f"size must be (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return (h, w)


def _example(inputs, input: str, n_channels: int, batch: int, size, dtype):
    h, w = size
    if input == "uint8":
        g = torch.Generator().manual_seed(0)
        return tuple(torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=g)
                     for _ in inputs)
    return (torch.randn(batch, n_channels, h, w, generator=torch.Generator().manual_seed(0)).to(dtype),)


def export_onnx(model, path, *, input: str = "uint8", output: str = "labels", dynamic: bool = True,
                dtype: torch.dtype = torch.float32, opset: Optional[int] = None,
                size=None, batch_size: int = 1, verify: bool = True) -> OnnxExport:
    """Write ``model`` (a checkpoint path, a release name, ``"default"``, a Segmenter or a reference
    model) to the ONNX file ``path``.

    Inputs: ``input="uint8"`` (default) takes ``frames``, (N, H, W, 3) uint8 RGB, and for a colour +
    HHA model also ``hha``, with the model's preprocessing inside the graph; ``"float"`` takes
    ``x``, the preprocessed (N, 3, H, W) tensor (N, 6, H, W for colour + HHA) in ``dtype``.
    Outputs: ``output="labels"`` (default) gives ``labels``, (N, H, W) uint8 (int32 above 256
    classes); ``"scores"`` gives ``scores``, the (N, C, H, W) full-resolution class scores. A
    model with several heads (SIFT Flow) gives one output per head, ``labels_semantic``, ...

    ``dynamic=True``: N, H and W are free (named ``batch``, ``height``, ``width``); ``False`` fixes
    them to ``batch_size`` × ``size``. ``dtype=torch.float16`` makes a half-precision graph for GPU
    runtimes. ``opset``: the ONNX opset (default: the exporter's). ``verify``: run the file with
    onnxruntime (where installed) at a size it was not traced at and raise if its labels differ
    from the reference on firm pixels.
    """
    size = _check_args(input, output, dtype, opset, size, batch_size, dynamic)
    path = os.fspath(path)
    if not path.lower().endswith(".onnx"):
        raise ValueError(f"{path}: the output file must end in .onnx")
    _ext.onnx_exporter()
    ref, convention = _resolve(model)
    # The caller's model is left as given (a model mid-training stays in training mode).
    modes = [(m, m.training) for m in ref.modules()]
    ref.eval()
    try:
        return _export(ref, convention, path, input, output, dynamic, dtype, opset, size,
                       batch_size, verify)
    finally:
        for m, training in modes:
            m.train(training)


def _export(ref, convention, path, input, output, dynamic, dtype, opset, size, batch_size,
            verify) -> OnnxExport:
    inputs, outputs = _names(ref, input, output)
    n_channels = 3 * len(streams(convention))
    # The reference stays as it is; a CPU float copy is traced.
    traced = _copy_of(ref, dtype)
    wrapper = DeployedFCN(traced, convention, input, output, dtype).eval()
    batch = 2 if dynamic else batch_size
    example = _example(inputs, input, n_channels, batch, size, dtype)
    kwargs = dict(input_names=list(inputs), output_names=list(outputs), dynamo=True,
                  external_data=False, verbose=False)
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamic:
        dims = (torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width"))
        axes = {0: dims[0], 1: dims[1], 2: dims[2]} if input == "uint8" else {0: dims[0], 2: dims[1], 3: dims[2]}
        kwargs["dynamic_shapes"] = dict(zip(("x", "hha"), (dict(axes) for _ in inputs)))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, example, **kwargs)
            program.save(tmp)
        os.replace(tmp, path)  # never a half-written model file at ``path``
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; say which model failed
        if os.path.exists(tmp):
            os.remove(tmp)
        raise RuntimeError(f"ONNX export of {ref.arch} failed: {type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    verified = "not verified (verify=False)"
    if verify:
        verified = _verify(path, ref, convention, inputs, input, output, dtype,
                           None if dynamic else size, None if dynamic else batch_size)
    return OnnxExport(path, ref.arch, inputs, outputs, dtype, dynamic, verified)


def _copy_of(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(device="cpu", dtype=dtype).eval()


def _verify(path, ref, convention, inputs, input, output, dtype, size, batch) -> str:
    """Run the exported file with onnxruntime on two synthetic scenes and compare with the
    reference's labels on firm pixels; RuntimeError on a mismatch."""
    ort = _ext.onnxruntime_module(required=False)
    if ort is None:
        return "not verified (onnxruntime is not installed)"
    from .data.synthetic import synthetic_scene

    h, w = size or _CHECK_SIZE
    n = batch or 2
    frames = np.stack([synthetic_scene(seed, h, w)[0] for seed in range(n)])
    # A colour + HHA model sees the scene as both images: the comparison needs inputs, not depth.
    pixels = torch.from_numpy(np.concatenate([frames] * len(streams(convention)), -1))
    with torch.inference_mode():
        scores = model_scores(ref, pixels.to(next(ref.parameters()).device), convention)
        x = to_network_input(pixels, convention, "cpu", dtype)
    scores = scores if isinstance(scores, dict) else {None: scores}
    feeds = {name: frames for name in inputs} if input == "uint8" else {"x": x.numpy()}
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = session.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - e.g. a float16 kernel the CPU provider lacks
        if dtype != torch.float32:
            return f"not verified (onnxruntime's CPU provider cannot run this {dtype} graph: " \
                   f"{str(e).splitlines()[0][:120]})"
        raise RuntimeError(f"onnxruntime cannot run the exported {path}: {e}") from e
    firm_total = firm_same = 0
    for out, ref_scores in zip(got, scores.values()):
        ref_scores = ref_scores.float().cpu()
        labels = torch.from_numpy(out).long() if output == "labels" else torch.from_numpy(out).float().argmax(1)
        firm = firm_pixels(ref_scores, dtype)
        same = labels == ref_scores.argmax(1)
        firm_total += int(firm.sum())
        firm_same += int(same[firm].sum())
    if not firm_total:
        return ("not verified: the reference's scores tie on every pixel of the check images "
                "(untrained score layers?)")
    agreement = firm_same / firm_total
    text = (f"onnxruntime {ort.__version__} at {n}×{h}×{w}: labels equal the reference on "
            f"{100 * agreement:.3f}% of {firm_total} firm pixels")
    if agreement < 0.999:
        raise RuntimeError(f"the exported {path} disagrees with the reference: {text}")
    return "verified with " + text

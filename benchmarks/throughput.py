"""End-to-end throughput of FCNs: fcnfast against the ways people run them today (issue 6).

Every column runs the same random-weight model (score layers randomised, so labels vary) on the
same frames (fcnfast's synthetic scenes, uint8 RGB N×H×W×3 on the host), in the same run:

  a  eager PyTorch fp32 the way pytorch-fcn users run it: numpy on the host (RGB→BGR, float64
     minus the mean — float32 /255, minus mean, over std for torchvision's ResNets — CHW), a
     float32 upload, the model, argmax on the device, int64 labels back to the host.
  b  eager fp16 channels-last (CPU: bf16 channels-last where oneDNN computes bf16 natively,
     ``fcnfast.engine.cpu_bf16_native()``, else fp32 channels-last): uint8 upload, normalisation
     on the device, the model, argmax, uint8 labels back.
  c  ``torch.compile`` of b's model (static shapes, recompiled per configuration; on CPU with
     ``torch._inductor.config.freezing = True``, which prepacks the weights); b's pre/post.
     Compile time (the first call) is reported apart, never in the timings.
  d  onnxruntime: the fp32 model + argmax exported with ``fcnfast.export_onnx`` (dynamic N/H/W),
     CPUExecutionProvider on CPU, CUDAExecutionProvider on GPU; a's numpy preprocessing. Skipped
     with a note when onnx/onnxruntime (or its CUDA provider on GPU) is missing.
  f  OpenVINO (CPU only): the fp32 model + argmax converted with OpenVINO's own
     ``openvino.convert_model`` from the PyTorch module, reshaped to the configuration's static
     size, compiled for the CPU plugin with the latency hint (its default inference precision:
     bf16 where the CPU has it natively, else fp32; the precision used is reported); a's numpy
     preprocessing. Skipped with a note when ``openvino`` is missing.
  e  fcnfast: ``fcnfast.Segmenter(model, device=...)`` with its defaults (backend auto, dtype
     auto); end to end ``seg.segment_batch(frames)``; on GPU also ``seg.stream(frames, N)``.

Reported per column: frames/s end to end (uint8 host frames in → labels on the host), model-only
device ms (peers: forward + argmax of a device tensor already preprocessed; fcnfast:
``seg.engine.run(uint8 pixels already on the device)``), both as ratios to a and to c, and label
agreement with a on firm pixels (a's top-2 score margin > 3% of the image's score range) and on
all pixels. CUDA events on GPU (perf_counter around synchronisations for onnxruntime and the
stream), perf_counter on CPU; warm-up, then the median of repeats that adapt to the time (at least
5 on CPU, 10 on GPU). The columns of a configuration are timed side by side: each round calls every
column once, the order rotating, so a machine whose speed drifts slows them all alike. The load average is printed and stored (other jobs share small machines).
Exits 1 when fcnfast's labels fail (error, or firm agreement < 99.9%).

    python benchmarks/throughput.py --quick                 # CI smoke run: tiny CPU config, seconds
    python benchmarks/throughput.py --json out.json         # GPU: full grid; CPU: a short default set
    python benchmarks/throughput.py --models fcn8s --sizes 1080x1920 --batches 1 8 --columns a c e
    python benchmarks/throughput.py --as-avx2               # CPU: every library as on an AVX2-only CPU

Defaults: on GPU, FCN-8s, FCN-32s and FCN-ResNet50 × 500x500, 720x1280, 1080x1920 × batch 1, 8;
on CPU, FCN-8s at 500x500 and 300x451, FCN-32s and FCN-ResNet50 at 500x500, batch 1. Sizes are
H×W. ``--models``/``--sizes``/``--batches`` given: their grid (the others default to 500x500 / 1).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

import fcnfast
from fcnfast.data.synthetic import synthetic_scene
from fcnfast.engine import cpu_bf16_native
from fcnfast.export import export_onnx
from fcnfast.models import ARCHS, build_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import (AS_AVX2, cpu_model, device_name, emulated_cpu_class, fmt, git_revision,  # noqa: E402
                    keep_freed_memory, load_average, malloc_setting, measure, measure_interleaved, now,
                    short_error, sync, triton_version)

COLUMNS = ("a", "b", "c", "d", "f", "e")  # in print order; e (fcnfast) last
PEERS = ("a", "b", "c", "d", "f")
FIRM_MARGIN = 0.03  # firm pixel: a's top-2 margin > this fraction of the image's score range
MIN_FIRM_AGREEMENT = 0.999  # fcnfast vs a on firm pixels; below it the run fails
MODEL_NAMES = {"fcn8s": "FCN-8s (VGG16)", "fcn32s": "FCN-32s (VGG16)", "fcn16s": "FCN-16s (VGG16)",
               "fcn8s_atonce": "FCN-8s at-once (VGG16)", "fcn_alexnet": "FCN-AlexNet",
               "fcn_googlenet": "FCN-GoogLeNet", "fcn_resnet50": "FCN-ResNet50",
               "fcn_resnet101": "FCN-ResNet101"}
GPU_DEFAULT = dict(models=["fcn8s", "fcn32s", "fcn_resnet50"],
                   sizes=[(500, 500), (720, 1280), (1080, 1920)], batches=[1, 8])
# 2 CPU cores run the full grid for hours: FCN-8s/32s/ResNet50 at 500x500 and the issue's own
# reference point, FCN-8s on a 451×300 (W×H) frame, batch 1.
CPU_DEFAULT = [("fcn8s", (500, 500), 1), ("fcn8s", (300, 451), 1), ("fcn32s", (500, 500), 1),
               ("fcn_resnet50", (500, 500), 1)]
# --quick: a narrow FCN-8s (fcnfast's VGG FCNs take widths=/fc_width=) at 64x80, batch 1 and 2.
QUICK_MODEL = dict(widths=(8, 16, 24, 32, 32), fc_width=64)
QUICK = [("fcn8s", (64, 80), 1), ("fcn8s", (64, 80), 2)]


class Skip(Exception):
    """A column that cannot run here (a missing package); reported as a note, not an error."""


# --- model and frames --------------------------------------------------------------------------

def random_model(arch: str, num_classes: int, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A reference model with random weights whose labels vary over the image.

    Caffe-style trunks (VGG, AlexNet, GoogLeNet: no normalisation layers) get He-normal convolutions
    and zero biases, so activations keep their scale through the depth (PyTorch's default init
    shrinks them until the biases alone pick one label everywhere); torchvision's ResNets keep
    their own init. Every score layer (out_channels == num_classes) is N(0, 1/fan_in).
    """
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, **kwargs).eval()
    gen = torch.Generator().manual_seed(seed)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        for m in model.modules():
            if type(m) is not torch.nn.Conv2d:
                continue
            fan_in = m.weight[0].numel()
            if m.out_channels == num_classes:
                std = 1.0 / math.sqrt(fan_in)
            elif not has_bn:
                std = math.sqrt(2.0 / fan_in)
            else:
                continue
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
            if m.bias is not None:
                m.bias.zero_()
    return model


def make_frames(batch: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """N×H×W×3 uint8 RGB synthetic scenes (objects on textured backgrounds)."""
    return np.stack([synthetic_scene(seed + i, h, w)[0] for i in range(batch)])


# --- preprocessing ---------------------------------------------------------------------------

def numpy_chw(img: np.ndarray, conv) -> np.ndarray:
    """One H×W×3 uint8 RGB image the way pytorch-fcn's dataset transform does it (float64 for the
    Caffe convention; float32 ToTensor + Normalize arithmetic for torchvision's)."""
    if conv.bgr:
        img = img[:, :, ::-1]
    if conv.scale == 255.0 and conv.std == (1.0, 1.0, 1.0):  # pytorch-fcn: float64 minus mean_bgr
        x = img.astype(np.float64)
        x -= np.array(conv.mean)
    else:  # torchvision: ToTensor (/255, float32), Normalize
        x = img.astype(np.float32) * np.float32(conv.scale / 255.0)
        x -= np.array(conv.mean, dtype=np.float32)
        x /= np.array(conv.std, dtype=np.float32)
    return x.transpose(2, 0, 1)


def pytorch_fcn_input(frames: np.ndarray, conv, device) -> torch.Tensor:
    """a's input: per image numpy → torch.from_numpy(...).float(), stacked (the DataLoader's
    collate), uploaded as float32."""
    return torch.stack([torch.from_numpy(numpy_chw(f, conv)).float() for f in frames]).to(device)


def torch_preprocessor(conv, device, dtype) -> Callable[[np.ndarray], torch.Tensor]:
    """b/c's input: uint8 upload, normalisation in float32 on the device, then ``dtype``
    channels-last."""
    mean = torch.tensor(conv.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(conv.std, device=device).view(1, 3, 1, 1)
    scale = conv.scale / 255.0

    def pre(frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float()
        if conv.bgr:
            x = x.flip(1)
        x = (x * scale - mean) / std
        return x.to(dtype).contiguous(memory_format=torch.channels_last)

    return pre


def label_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 256 else torch.int32


# --- the reference labels and the agreement ---------------------------------------------------

@torch.no_grad()
def reference_labels(model, x: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """a's labels and its firm-pixel mask (top-2 margin > FIRM_MARGIN of each image's range)."""
    scores = model(x).float()
    labels = scores.argmax(1)
    if scores.shape[1] > 1:
        top2 = scores.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
    else:
        margin = torch.full_like(scores[:, 0], float("inf"))
    flat = scores.flatten(1)
    spread = (flat.amax(1) - flat.amin(1)).clamp_min(1e-30).view(-1, 1, 1)
    firm = margin > FIRM_MARGIN * spread
    return labels.cpu().numpy(), firm.cpu().numpy()


def agreement(labels, ref_labels: np.ndarray, firm: np.ndarray) -> Tuple[Optional[float], float]:
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != ref_labels.shape:
        raise ValueError(f"labels of shape {labels.shape}, the reference's {ref_labels.shape}")
    same = labels == ref_labels
    return (float(same[firm].mean()) if firm.any() else None), float(same.mean())


# --- the columns -------------------------------------------------------------------------------

class Settings:
    def __init__(self, device: torch.device, quick: bool, repeats: Optional[int], warmup: Optional[int]):
        self.device = device
        cuda = device.type == "cuda"
        if quick:
            self.warmup, self.min_repeats, self.budget_s = 1, 2, 0.0
        elif cuda:
            self.warmup, self.min_repeats, self.budget_s = 3, 10, 1.0
        else:  # CPU: a 500x500 VGG frame takes seconds
            self.warmup, self.min_repeats, self.budget_s = 1, 5, 4.0
        if repeats is not None:
            self.min_repeats, self.budget_s = repeats, 0.0
        if warmup is not None:
            self.warmup = warmup

    def time_side_by_side(self, fns: Dict[str, Tuple[Callable[[], object], bool]]):
        """``measure_interleaved`` with this run's warm-up, repeats and budget."""
        return measure_interleaved(fns, self.device, warmup=self.warmup, min_repeats=self.min_repeats,
                                   budget_s=self.budget_s,
                                   max_repeats=200 if self.device.type == "cuda" else 50)


# --float32: every CPU column in float32, as on a CPU without native bf16 (AVX2-only).
FLOAT32_ONLY = False


def low_precision_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bf16_native() and not FLOAT32_ONLY else torch.float32


def engine_dtype(device: torch.device):
    """fcnfast's ``dtype``: its default (None), float32 under --float32 on the CPU."""
    return torch.float32 if FLOAT32_ONLY and device.type == "cpu" else None


class ArchModels:
    """The models of one architecture, built once and shared by its configurations."""

    def __init__(self, arch: str, num_classes: int, device: torch.device, kwargs: dict):
        self.arch, self.device = arch, device
        self.fp32 = random_model(arch, num_classes, **kwargs).to(device)  # a, d, e (shared)
        self.conv = self.fp32.input_convention
        self.num_classes = num_classes
        self.lp_dtype = low_precision_dtype(device)
        self._lp = None
        self._ort = None
        self._ov = None
        self._seg = None
        self.setup_s: Dict[str, float] = {}

    @property
    def low_precision(self):  # b, and what c compiles
        if self._lp is None:
            t0 = time.perf_counter()
            self._lp = copy.deepcopy(self.fp32).to(dtype=self.lp_dtype,
                                                   memory_format=torch.channels_last).eval()
            self.setup_s["b"] = time.perf_counter() - t0
        return self._lp

    def segmenter(self):
        if self._seg is None:
            t0 = time.perf_counter()
            self._seg = fcnfast.Segmenter(self.fp32, device=self.device, dtype=engine_dtype(self.device))
            sync(self.device)
            self.setup_s["e"] = time.perf_counter() - t0
        return self._seg

    def _once(self, attr: str, setup_key: str, make):
        """``make(fp32 model, device)`` once per architecture; a failure (Skip or an export or
        conversion error) is remembered and re-raised, not retried."""
        if getattr(self, attr) is None:
            t0 = time.perf_counter()
            try:
                setattr(self, attr, make(self.fp32, self.device))
            except Exception as e:  # noqa: BLE001 - re-raised below, now and on every later call
                setattr(self, attr, e)
            self.setup_s[setup_key] = time.perf_counter() - t0
        value = getattr(self, attr)
        if isinstance(value, Exception):
            raise value
        return value

    def ort(self):
        """The exported model, for onnxruntime."""
        return self._once("_ort", "d_export", OrtModel)

    def openvino(self):
        """The model converted by OpenVINO."""
        return self._once("_ov", "f_convert", OpenVinoModel)


class OpenVinoModel:
    """The fp32 model + argmax as OpenVINO converts it from the PyTorch module (dynamic N, H, W),
    compiled per configuration at its static size for the CPU plugin."""

    def __init__(self, model, device: torch.device):
        if device.type != "cpu":
            raise Skip("OpenVINO's column runs on the CPU only")
        try:
            import openvino as ov
        except ImportError:
            raise Skip("openvino not installed; pip install openvino") from None
        from fcnfast.export import DeployedFCN

        self.ov, self.version = ov, ov.__version__
        wrapper = DeployedFCN(copy.deepcopy(model).eval(), model.input_convention, "float", "labels").eval()
        example = torch.randn(1, 3, 67, 83)
        with torch.no_grad():
            self.model = ov.convert_model(wrapper, example_input=example,
                                          input=[ov.PartialShape([-1, 3, -1, -1])])
        self.core = ov.Core()

    def compile(self, shape, profile: bool = False) -> "object":
        """Compiled for ``shape``; ``profile``: with OpenVINO's per-node counters on."""
        model = self.model.clone()
        model.reshape({model.inputs[0]: self.ov.PartialShape(list(shape))})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        if FLOAT32_ONLY:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if profile:
            config["PERF_COUNT"] = True
        return self.core.compile_model(model, "CPU", config)


def ov_precision(compiled) -> str:
    """The precision OpenVINO's CPU plugin computes in (bf16 where native, else f32)."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return hint.to_string() if hasattr(hint, "to_string") else str(hint)


class OrtModel:
    """The fp32 model + argmax exported to ONNX (dynamic N, H, W), and onnxruntime sessions of it.

    A session is opened per configuration and closed after it: onnxruntime's memory arena never
    shrinks, and on a GPU it would keep the memory the other columns need.
    """

    def __init__(self, model, device: torch.device):
        try:
            importlib.import_module("onnx")  # the exporter needs onnx and onnxscript
            importlib.import_module("onnxscript")
            import onnxruntime as ort
        except ImportError as e:
            raise Skip(f"onnxruntime/onnx not installed ({e.name}); pip install onnx onnxruntime") from None
        self.ort, self.device = ort, device
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise Skip("onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu)")
            providers = [("CUDAExecutionProvider", {"device_id": str(device.index or 0)})]
        else:
            providers = ["CPUExecutionProvider"]
        self.tmp = tempfile.TemporaryDirectory(prefix="fcnfast-onnx-")
        path = os.path.join(self.tmp.name, "model.onnx")
        # fcnfast's own exporter (dynamic N, H, W): what a user deploying the model gets.
        export_onnx(model, path, input="float", output="labels", verify=False)
        self.path, self.providers = path, providers
        self.version = ort.__version__
        self.open().close()  # fail here, once, if the session cannot start

    def open(self) -> "OrtSession":
        return OrtSession(self)


class OrtSession:
    def __init__(self, exported: OrtModel):
        ort, device = exported.ort, exported.device
        self.device = device
        opts = ort.SessionOptions()
        if device.type == "cpu":  # as many threads as the torch columns
            opts.intra_op_num_threads = torch.get_num_threads()
            # Its idle threads spin by default, taking the cores from whatever runs next: the
            # column after it in an interleaved pass ran 10-35% slower. Without spinning
            # onnxruntime itself is as fast (benchmarks/RESULTS.md).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sess = ort.InferenceSession(exported.path, opts, providers=exported.providers)
        used = self.sess.get_providers()
        if device.type == "cuda" and used[0] != "CUDAExecutionProvider":
            raise Skip(f"onnxruntime did not start its CUDA provider (providers: {used})")
        self.provider = used[0]

    def close(self):
        self.sess = None

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {"x": x})[0]

    def model_only(self, x: torch.Tensor) -> Callable[[], object]:
        """A call running the session on ``x`` (preprocessed, on the device) with the labels left
        on the device."""
        if self.device.type != "cuda":
            xn = x.contiguous().numpy()
            return lambda: self.run_numpy(xn)
        x = x.contiguous()
        binding = self.sess.io_binding()
        binding.bind_input("x", "cuda", self.device.index or 0, np.float32, list(x.shape), x.data_ptr())
        binding.bind_output("labels", "cuda", self.device.index or 0)

        def run():
            self.sess.run_with_iobinding(binding)
            return x  # keeps x alive while bound

        return run


@dataclass
class Prepared:
    """One column ready to time: ``e2e`` (uint8 host frames → labels on the host), ``model`` (the
    preprocessed device tensor in, labels left on the device), ``events`` (CUDA events can time it;
    False for another runtime's streams), the facts its row reports, and what to release after the
    configuration."""
    e2e: Callable[[], object]
    model: Callable[[], object]
    info: dict
    events: bool = True
    close: Callable[[], None] = lambda: None


def prep_a(m: ArchModels, frames, x_a) -> Prepared:
    model, conv, device = m.fp32, m.conv, m.device

    @torch.no_grad()
    def e2e():
        x = pytorch_fcn_input(frames, conv, device)
        return model(x).max(1)[1].cpu().numpy()  # int64

    @torch.no_grad()
    def model_only():
        return model(x_a).argmax(1)

    return Prepared(e2e, model_only, dict(dtype="float32"))


def prep_b(m: ArchModels, frames, x_a, compiled=False) -> Prepared:
    model = m.low_precision
    info = dict(dtype=str(m.lp_dtype).replace("torch.", ""))
    close = lambda: None  # noqa: E731
    if compiled:
        import torch._dynamo as dynamo
        import torch._inductor.config as inductor_config

        dynamo.reset()
        if m.device.type == "cpu":
            inductor_config.freezing = True  # constant weights, prepacked for oneDNN
        model = torch.compile(model, dynamic=False)
        close = dynamo.reset  # frees the compiled graphs (and frozen weights) of this configuration
    pre = torch_preprocessor(m.conv, m.device, m.lp_dtype)
    ldt = label_dtype(m.num_classes)
    x_b = pre(frames)
    if compiled:  # the first call compiles: timed apart
        sync(m.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x_b)
        sync(m.device)
        info["compile_s"] = time.perf_counter() - t0

    @torch.no_grad()
    def e2e():
        return model(pre(frames)).argmax(1).to(ldt).cpu().numpy()

    @torch.no_grad()
    def model_only():
        return model(x_b).argmax(1)

    return Prepared(e2e, model_only, info, close=close)


def prep_c(m, frames, x_a) -> Prepared:
    return prep_b(m, frames, x_a, compiled=True)


def prep_d(m: ArchModels, frames, x_a) -> Prepared:
    exported = m.ort()
    conv = m.conv
    if m.device.type == "cuda":
        torch.cuda.empty_cache()  # hand torch's cached blocks to onnxruntime
    t0 = time.perf_counter()
    sess = exported.open()
    open_s = time.perf_counter() - t0

    def e2e():
        x = np.stack([numpy_chw(f, conv).astype(np.float32) for f in frames])
        return sess.run_numpy(x)

    info = dict(dtype="float32", provider=sess.provider, onnxruntime=exported.version,
                session_s=open_s, export_s=m.setup_s.get("d_export"))
    return Prepared(e2e, sess.model_only(x_a), info, events=False, close=sess.close)


def prep_f(m: ArchModels, frames, x_a) -> Prepared:
    converted = m.openvino()
    conv = m.conv
    t0 = time.perf_counter()
    compiled = converted.compile(tuple(x_a.shape))
    compile_s = time.perf_counter() - t0
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: x})[compiled.outputs[0]])

    def e2e():
        return run(np.stack([numpy_chw(f, conv).astype(np.float32) for f in frames]))

    xn = x_a.contiguous().numpy()
    info = dict(dtype=ov_precision(compiled), openvino=converted.version, compile_s=compile_s,
                convert_s=m.setup_s.get("f_convert"))
    return Prepared(e2e, lambda: run(xn), info, events=False)


def prep_e(m: ArchModels, frames, x_a) -> Prepared:
    seg = m.segmenter()
    n = len(frames)
    pixels = torch.from_numpy(frames).to(m.device)
    info = dict(dtype=str(seg.dtype).replace("torch.", ""), backend=seg.backend,
                op_backends=dict(seg.op_backends))
    return Prepared(lambda: seg.segment_batch(frames, batch_size=n),
                    lambda: seg.engine.run(pixels) if seg.engine is not None else seg._labels(pixels),
                    info)


def stream_fps(m: ArchModels, frames, st: Settings) -> dict:
    """fcnfast's ``stream`` over a few batches of the frames (GPU): frames/s."""
    seg, n = m.segmenter(), len(frames)
    stream_frames = [frames[i % n] for i in range(max(8 * n, 32))]

    def stream():
        for _ in seg.stream(iter(stream_frames), batch_size=n):
            pass

    t = measure(stream, m.device, warmup=1, min_repeats=3, budget_s=st.budget_s,
                max_repeats=20, cuda_events=False)
    return dict(stream_fps=len(stream_frames) / t.median_s, stream_frames=len(stream_frames))


PREPARE = {"a": prep_a, "b": prep_b, "c": prep_c, "d": prep_d, "f": prep_f, "e": prep_e}


def column_title(col: str, device: torch.device) -> str:
    lp = str(low_precision_dtype(device)).replace("torch.", "")
    cl = "channels-last"
    return {"a": "eager fp32 (pytorch-fcn)", "b": f"eager {lp} {cl}",
            "c": f"torch.compile {lp} {cl}" + (" (freezing)" if device.type == "cpu" else ""),
            "d": "onnxruntime fp32 (" + ("CUDA" if device.type == "cuda" else "CPU") + " EP)",
            "f": "OpenVINO (CPU plugin, latency hint)",
            "e": "fcnfast Segmenter (defaults)"}[col]


# --- one configuration -------------------------------------------------------------------------

def bench_config(m: ArchModels, size, batch: int, columns: List[str], st: Settings, meta: dict) -> dict:
    h, w = size
    device = m.device
    row = {"model": m.arch, "model_name": MODEL_NAMES.get(m.arch, m.arch), "height": h, "width": w,
           "batch": batch, "num_classes": m.num_classes,
           **{k: meta[k] for k in ("device", "device_type", "torch", "triton", "onnxruntime",
                                   "openvino", "fcnfast", "git", "threads")},
           "date": now(), "loadavg_before": load_average(), "columns": {}}
    frames = make_frames(batch, h, w)
    x_a = pytorch_fcn_input(frames, m.conv, device)
    ref_labels, firm = reference_labels(m.fp32, x_a)
    row["firm_fraction"] = float(firm.mean())
    row["label_histogram"] = np.bincount(ref_labels.ravel(), minlength=m.num_classes).tolist()
    prepared: Dict[str, Prepared] = {}
    for col in columns:
        c = {"title": column_title(col, device), "status": "ok"}
        row["columns"][col] = c
        try:
            prepared[col] = PREPARE[col](m, frames, x_a)
        except Skip as e:
            c["status"] = f"skipped: {e}"
        except Exception as e:  # noqa: BLE001 - one column failing must not stop the others
            c["status"] = short_error(e)
    # Side by side, round by round: a small machine's speed drifts over minutes, and columns timed
    # one after another would carry that drift as a difference between them.
    labels: Dict[str, object] = {}

    def keep(col: str, fn: Callable[[], object]) -> Callable[[], None]:
        def call():
            labels[col] = fn()
        return call

    try:
        t_e2e, errors = st.time_side_by_side({col: (keep(col, p.e2e), p.events)
                                              for col, p in prepared.items()})
        t_model, more = st.time_side_by_side({col: (p.model, p.events) for col, p in prepared.items()
                                              if col not in errors})
        errors.update(more)
        if "e" in t_model and device.type == "cuda":
            prepared["e"].info.update(stream_fps(m, frames, st))
    finally:
        for p in prepared.values():
            p.close()
    for col, p in prepared.items():
        c = row["columns"][col]
        if col in errors:
            c["status"] = short_error(errors[col])
            continue
        e2e, model_t = t_e2e[col], t_model[col]
        firm_agree, all_agree = agreement(labels[col], ref_labels, firm)
        c.update(p.info, fps=batch / e2e.median_s, e2e_ms=e2e.ms, model_ms=model_t.ms,
                 e2e_repeats=e2e.repeats, model_repeats=model_t.repeats,
                 e2e_timer=e2e.timer, model_timer=model_t.timer,
                 e2e_samples_ms=[round(v * 1e3, 3) for v in e2e.samples],
                 model_samples_ms=[round(v * 1e3, 3) for v in model_t.samples],
                 firm_agreement=firm_agree, agreement=all_agree)
        if col in m.setup_s:
            c["setup_s"] = m.setup_s[col]
    for base in ("a", "c"):
        b = row["columns"].get(base, {})
        for c in row["columns"].values():
            ok = b.get("fps") and c.get("fps")
            c[f"fps_vs_{base}"] = c["fps"] / b["fps"] if ok else None
            c[f"model_speedup_vs_{base}"] = b["model_ms"] / c["model_ms"] if ok else None
    peers = [c for k, c in row["columns"].items() if k in PEERS and c.get("fps")]
    e = row["columns"].get("e", {})
    if peers and e.get("fps"):
        best_fps = max(peers, key=lambda c: c["fps"])
        best_model = min(peers, key=lambda c: c["model_ms"])
        e["fps_vs_best_peer"] = e["fps"] / best_fps["fps"]
        e["best_peer"] = best_fps["title"]
        e["model_speedup_vs_best_peer"] = best_model["model_ms"] / e["model_ms"]
        e["best_model_peer"] = best_model["title"]
    row["loadavg_after"] = load_average()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# --- reporting ---------------------------------------------------------------------------------

def print_header():
    print(f"  {'column':<44}{'frames/s':>10}{'e2e ms':>10}{'model ms':>10}{'fps×a':>7}{'mdl×a':>7}"
          f"{'fps×c':>7}{'mdl×c':>7}{'firm%':>9}{'all%':>8}  notes")


def print_config(row: dict):
    la = row["loadavg_before"], row["loadavg_after"]
    print(f"{row['model_name']} {row['height']}x{row['width']} batch {row['batch']}  "
          f"(firm pixels {100 * row['firm_fraction']:.1f}%; load avg "
          f"{' '.join(map(str, la[0] or []))} → {' '.join(map(str, la[1] or []))})")
    print_header()
    for col, c in row["columns"].items():
        if c["status"] != "ok":
            print(f"{col} {c['title']:<44}{'':>56}  {c['status']}")
            continue
        notes = [c["dtype"]]
        if "compile_s" in c:
            notes.append(f"compile {c['compile_s']:.1f} s")
        if "stream_fps" in c:
            notes.append(f"stream {c['stream_fps']:.1f} frames/s")
        if "op_backends" in c:
            notes.append("ops " + ",".join(f"{k}={v}" for k, v in c["op_backends"].items()))
        if "provider" in c:
            notes.append(c["provider"])
        if c.get("fps_vs_best_peer"):
            notes.append(f"{c['fps_vs_best_peer']:.2f}× the best peer end to end ({c['best_peer']}), "
                         f"model {c['model_speedup_vs_best_peer']:.2f}× ({c['best_model_peer']})")
        notes.append(f"n={c['e2e_repeats']}/{c['model_repeats']}")
        firm = None if c["firm_agreement"] is None else 100 * c["firm_agreement"]
        print(f"{col} {c['title']:<44}{c['fps']:>10.2f}{c['e2e_ms']:>10.1f}{c['model_ms']:>10.1f}"
              f"{fmt(c['fps_vs_a'], '7.2f'):>7}{fmt(c['model_speedup_vs_a'], '7.2f'):>7}"
              f"{fmt(c['fps_vs_c'], '7.2f'):>7}{fmt(c['model_speedup_vs_c'], '7.2f'):>7}"
              f"{fmt(firm, '9.3f'):>9}{100 * c['agreement']:>8.2f}  {'; '.join(notes)}")
    sys.stdout.flush()


def failures(rows: List[dict]) -> List[str]:
    """fcnfast rows that errored or whose labels disagree with a on firm pixels."""
    bad = []
    for r in rows:
        c = r["columns"].get("e")
        if c is None:
            continue
        where = f"{r['model']} {r['height']}x{r['width']} batch {r['batch']}"
        if c["status"] != "ok":
            bad.append(f"{where}: fcnfast {c['status']}")
        elif c.get("firm_agreement") is None and "a" in r["columns"]:
            bad.append(f"{where}: no agreement with a measured (a: {r['columns']['a']['status']})")
        elif c.get("firm_agreement") is not None and c["firm_agreement"] < MIN_FIRM_AGREEMENT:
            bad.append(f"{where}: fcnfast labels agree with a on {100 * c['firm_agreement']:.3f}% "
                       f"of firm pixels (< {100 * MIN_FIRM_AGREEMENT:.1f}%)")
    return bad


# --- command line ------------------------------------------------------------------------------

def _size(s: str):
    try:
        h, w = s.lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 500x500 (HxW), got {s!r}") from None


def _columns(values: List[str]) -> List[str]:
    cols = []
    for v in values:
        for ch in v.replace(",", "").lower():
            if ch not in COLUMNS:
                raise argparse.ArgumentTypeError(f"unknown column {ch!r}; columns are {' '.join(COLUMNS)}")
            if ch not in cols:
                cols.append(ch)
    return sorted(cols, key=COLUMNS.index)


def configs_from(args, device: torch.device) -> List[Tuple[str, Tuple[int, int], int]]:
    if args.quick:
        return list(QUICK)
    if device.type == "cpu" and not (args.models or args.sizes or args.batches):
        return list(CPU_DEFAULT)
    d = GPU_DEFAULT if device.type == "cuda" else dict(models=GPU_DEFAULT["models"],
                                                       sizes=[(500, 500)], batches=[1])
    return [(a, s, b) for a in (args.models or d["models"]) for s in (args.sizes or d["sizes"])
            for b in (args.batches or d["batches"])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run (seconds, CPU): narrow FCN-8s at 64x80, batch 1 and 2, columns a b e")
    p.add_argument("--models", "--arch", nargs="+", choices=sorted(ARCHS), default=None)
    p.add_argument("--sizes", "--size", nargs="+", type=_size, default=None, help="HxW sizes")
    p.add_argument("--batches", "--batch", nargs="+", type=int, default=None)
    p.add_argument("--columns", nargs="+", default=None,
                   help="a subset of a b c d f e (default: all; --quick: a b e)")
    p.add_argument("--no-compile", action="store_true", help="leave out column c (torch.compile)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    p.add_argument("--repeats", "--iters", type=int, default=None,
                   help="exactly this many timed runs per measurement (default: adaptive)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs per measurement")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and onnxruntime (default: torch's; --quick: 1, as a "
                        "tiny model on a shared machine mostly waits at the thread pool's barriers)")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--float32", action="store_true",
                   help="CPU: every column in float32 (fcnfast dtype=float32, eager/compile fp32, "
                        "OpenVINO's f32 precision hint): what a CPU without native bf16 runs, on "
                        "this CPU's instruction set")
    p.add_argument(AS_AVX2, dest="as_avx2", action="store_true",
                   help="CPU: every library picks the kernels it would on an AVX2-only CPU (CPUID "
                        "without AVX-512, AMX or native bf16; Linux, x86-64, a C compiler), each "
                        "column then in its own default precision (benchmarks/cpuid_avx2.c)")
    p.add_argument("--json", help="write the rows to this JSON file (rewritten after each configuration)")
    args = p.parse_args(argv)
    global FLOAT32_ONLY
    FLOAT32_ONLY = args.float32
    cpu_class = emulated_cpu_class()
    try:
        columns = _columns(args.columns) if args.columns else (["a", "b", "e"] if args.quick else list(COLUMNS))
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if args.no_compile and "c" in columns:
        columns.remove("c")
    if args.quick:
        args.device = "cpu"
        if args.repeats is None:
            args.repeats = 2
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    st = Settings(device, args.quick, args.repeats, args.warmup)
    configs = configs_from(args, device)

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = "not installed"
    name = device_name(device) if device.type == "cuda" else f"{cpu_model()}, torch threads: {torch.get_num_threads()}"
    meta = {"device": name, "device_type": device.type,
            "cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "float32_only": FLOAT32_ONLY, "cpu_class_emulated": cpu_class,
            "torch": torch.__version__, "triton": triton_version(), "onnxruntime": ort_version,
            "openvino": ov_version, "fcnfast": fcnfast.__version__, "git": git_revision(), "python": sys.version.split()[0],
            "date": now(), "loadavg_start": load_average(), "columns": columns,
            "column_titles": {c: column_title(c, device) for c in columns},
            "timing": (f"warm-up {st.warmup}, median of >= {st.min_repeats} runs "
                       f"(more while under {st.budget_s:g} s); "
                       + ("CUDA events (onnxruntime, stream: perf_counter)" if device.type == "cuda"
                          else "perf_counter")),
            "firm_margin": FIRM_MARGIN, "quick": args.quick, "malloc": malloc_setting()}
    if device.type == "cuda":
        meta.update(cudnn_benchmark=torch.backends.cudnn.benchmark,
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    print(f"fcnfast {meta['fcnfast']} throughput on {meta['device']} ({meta['cores']} cores); torch {meta['torch']}, triton {meta['triton']}, onnxruntime {ort_version}, openvino {ov_version}, git "
          f"{meta['git']}; {meta['date']}; load avg {meta['loadavg_start']}")
    print(f"timing: {meta['timing']}; frames/s end to end (uint8 host frames → labels on the host); "
          f"model ms: device tensor in, labels on the device; ×a, ×c: ratios (>1 = faster); "
          f"firm%/all%: labels equal to a's on firm / all pixels; {meta['malloc']}")
    if cpu_class:
        print(f"CPU class: {cpu_class}")
    rows: List[dict] = []

    def write_json():
        if args.json:
            meta["loadavg_end"] = load_average()
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "rows": rows}, f, indent=1)

    models: Dict[str, ArchModels] = {}
    for arch, size, batch in configs:
        if arch not in models:
            models.clear()  # one architecture's models in memory at a time
            kwargs = QUICK_MODEL if args.quick else {}
            models[arch] = ArchModels(arch, args.num_classes, device, kwargs)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        row = bench_config(models[arch], size, batch, columns, st, meta)
        if args.quick:
            row["model_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in QUICK_MODEL.items()}
        rows.append(row)
        print_config(row)
        write_json()
    bad = failures(rows)
    for b in bad:
        print(f"FAIL: {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(main())

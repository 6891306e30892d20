"""The engine: one FCN's weights prepared once at load time, run frame batch after batch.

uint8 frames (N, H, W, 3) on the device → fused preprocess (compute dtype, channels-last) → trunk
(cuDNN/oneDNN through PyTorch, ``layers.inference_copy``; the model's ``run_trunk``) → the steps of
the model's ``head_plans()`` on the head ops, each bound to its backend at load (``backends``) →
labels (N, H, W) uint8/int32 on the device. On GPU the whole sequence is captured as a CUDA graph
per input shape (``graphs``). The engine asks the model for its plan, never for its class.
"""
from __future__ import annotations

import threading
import warnings
from typing import Dict, Optional, Tuple

import torch

from .. import contract, ops
from ..convention import streams
from ..images import model_scores, to_network_input
from ..models import FCNBase
from . import border, tiling
from .amx import use_amx
from .backends import OpRunner
from .graphs import GraphCache
from .layers import inference_copy
from .precision import compute_dtype
from .winograd import available as winograd_available, use_winograd


# Above this many pixels per batch the CPU engine runs frame by frame (see ``_run_device``).
_BATCHED_PIXELS = 512 * 512


class Engine:
    """Runs ``model``'s weights on the fast path. ``model`` is the float32 reference on ``device``
    (kept as is: it is the precision guard's fallback and ``compare``'s ground truth);
    ``convention`` is how images become its input (default: the model's own)."""

    def __init__(self, model: FCNBase, device: torch.device, dtype: Optional[torch.dtype] = None,
                 backend: str = "auto", cuda_graphs: Optional[bool] = None,
                 graph_cache_size: int = 8, fc_tile_rows: Optional[int] = None,
                 skip_border: Optional[bool] = None,
                 winograd: Optional[bool] = None,
                 amx: Optional[bool] = None,
                 convention=None):
        self.reference = model
        self.device = torch.device(device)
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs=True needs a CUDA device")
        self.dtype = compute_dtype(self.device, dtype)
        self.convention = convention or model.input_convention
        plans = model.head_plans()
        if not plans:
            raise TypeError(f"the engine has no head plan for {type(model).__name__}")
        # Several heads (SIFT Flow) share the trunk and the coarse grid: their coarse scores travel
        # concatenated over channels, their labels stacked as (N, heads, H, W).
        self.plans, self.head_classes = tuple(plans), tuple(model.head_classes)
        self.label_dtype = contract.label_dtype(max(self.head_classes))
        self._skip_layers = tuple(dict.fromkeys(name for p in plans for name in p.skip_layers))
        self.net = inference_copy(model, self.device, self.dtype)
        # Wide 3×3 convolutions as Winograd (``winograd``): by default on CPU every eligible one,
        # in a pad-100 net (VGG) those that ``winograd.pays_in_chain``; the border buffers then come
        # from the same Winograd layers. True forces every eligible layer (CPU only), False keeps
        # them direct.
        chain = winograd is None and bool(model.trunk_chain)
        if winograd is None:
            winograd = self.device.type == "cpu" and winograd_available()
        if winograd and self.device.type != "cpu":
            raise ValueError("winograd=True needs the CPU (on CUDA, cuDNN chooses its algorithms)")
        self.winograd_layers = use_winograd(self.net, chain) if winograd else 0
        # bfloat16 1×1 layers on the AMX tile unit (``amx``): by default wherever the CPU has it;
        # True raises where it cannot run, False keeps oneDNN's convolutions. (The Winograd layers'
        # batched products stay oneDNN's: as a stack of amx_matmul products they ran slower steady
        # and no faster at new sizes, benchmarks/RESULTS.md.)
        if amx is None:
            amx = self.device.type == "cpu" and self.dtype == torch.bfloat16 and ops.amx_available()
        elif amx:
            ok, why = ops.amx_status()
            if self.device.type != "cpu" or self.dtype != torch.bfloat16 or not ok:
                raise ValueError("amx=True needs a bfloat16 engine on a CPU that runs amx_matmul: "
                                 + (why or f"this engine runs {self.dtype} on {self.device}"))
        self.amx_layers = use_amx(self.net) if amx else 0
        self._preprocess = OpRunner("preprocess", backend, self.device)
        self._skip_runners = [[OpRunner("upsample_crop_add", backend, self.device, step.geometry)
                               for step in p.skips] for p in plans]
        self._final_runners = [OpRunner(p.final.op, backend, self.device, p.final.geometry)
                               for p in plans]
        # fc6/fc7 in row tiles: forced by ``fc_tile_rows``, or switched on after running out of memory.
        self._fc_names = model.fc_block
        self.fc_tile_rows = fc_tile_rows
        # Recompute only the image-dependent core of the early maps (``border``): on CPU, for
        # trunks that are chains (the pad-100 ones). Not on GPU yet (unmeasured; CUDA graphs would
        # keep the buffers).
        if skip_border is None:
            skip_border = self.device.type == "cpu"
        self.border = border.BorderCache() if skip_border and model.trunk_chain else None
        self._lock = threading.Lock()  # the border buffers serve one batch at a time
        # cuda_graphs=True never falls back; the default (None) runs uncaptured after a failed
        # capture, with one warning.
        self._graphs_named = bool(cuda_graphs)
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda"
        self.graphs = GraphCache(self._run_device, graph_cache_size) if cuda_graphs else None
        self._warned_precision = False

    @property
    def op_backends(self) -> Dict[str, str]:
        """The backend each op runs on (after any first-use fallback)."""
        out = {"preprocess": self._preprocess.backend}
        for plan, skips, final in zip(self.plans, self._skip_runners, self._final_runners):
            if skips:
                out["upsample_crop_add"] = skips[0].backend
            out[plan.final.op] = final.backend
        return out

    def label_shape(self, n: int, h: int, w: int) -> Tuple[int, ...]:
        """Shape of the labels of ``n`` frames of h×w: (n, h, w), or (n, heads, h, w)."""
        return (n, h, w) if len(self.plans) == 1 else (n, len(self.plans), h, w)

    # -- the network -----------------------------------------------------------------------------
    def network_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 or (N, 3, H, W) float [0, 1] pixels on the device → the net's input."""
        convs = streams(self.convention)
        if pixels.dtype != torch.uint8:
            x = to_network_input(pixels, self.convention, self.device, self.dtype)
            return x.contiguous(memory_format=torch.channels_last)
        # A model of several input images takes their channels 3 by 3 (colour, then HHA).
        parts = [self._preprocess(pixels[..., 3 * i:3 * i + 3], mean=c.mean, std=c.std,
                                  scale=c.scale / 255.0, bgr=c.bgr, dtype=self.dtype,
                                  channels_last=True) for i, c in enumerate(convs)]
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts, 1).contiguous(memory_format=torch.channels_last)

    def _trunk(self, x: torch.Tensor):
        """Coarse class scores and the skip features the head needs."""
        net, keep, fc = self.net, self._skip_layers, self._fc_names
        if self.border is not None and not self.fc_tile_rows:
            h, kept = self.border.run(net, net.trunk_chain, x, keep)
            return net.score_heads(h), kept
        if self.fc_tile_rows and fc:
            h, kept = net.run_trunk(x, keep, until=fc[0])
            return net.score_heads(tiling.run_tiled(net, fc, h, self.fc_tile_rows)), kept
        return net.run_trunk(x, keep)

    @torch.inference_mode()
    def coarse_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The map the final op upsamples: score_fr after the skip fusions (several heads: theirs,
        concatenated over channels)."""
        coarse, kept = self._trunk(x)
        out = []
        for h, plan, runners in zip(coarse if len(self.plans) > 1 else [coarse], self.plans,
                                    self._skip_runners):
            for step, run in zip(plan.skips, runners):
                h = run(h, step.weight, step.stride, kept[step.skip], skip_offset=step.skip_offset,
                        skip_weight=step.skip_weight, skip_bias=step.skip_bias,
                        skip_scale=step.skip_scale)
            out.append(h)
        return out[0] if len(out) == 1 else torch.cat(out, 1)

    def _final(self, h: torch.Tensor, size):
        parts = h.split(self.head_classes, 1) if len(self.plans) > 1 else (h,)
        results = []
        for h, plan, run in zip(parts, self.plans, self._final_runners):
            f = plan.final
            if f.weight is None:
                results.append(run(h, size, return_scores=True))
            else:
                results.append(run(h, f.weight, f.stride, f.offset, size, return_scores=True))
        return self._stack(results)

    def _stack(self, results):
        """(labels, scores) of one head as they are; of several, stacked on dim 1."""
        if len(results) == 1:
            return results[0]
        labels = torch.stack([lab.to(self.label_dtype) for lab, _ in results], 1)
        return labels, torch.stack([sc for _, sc in results], 1)

    def _run_device(self, pixels: torch.Tensor):
        """labels, winning scores and an all-finite flag of one batch (no host synchronisation, so
        it can be captured in a CUDA graph)."""
        if self.border is not None:
            # Large batches frame by frame: the CPU trunk is compute-bound, so a batch gains
            # nothing, while N-frame border buffers cost N times the memory and overflow their
            # budget (figures: benchmarks/RESULTS.md, "Figures moved out of code comments").
            # Small frames stay batched: there the per-call overhead is what counts.
            n, h, w = self._batch_size(pixels)
            with self._lock:
                if n <= 1 or n * h * w <= _BATCHED_PIXELS:
                    return self._run_batch(pixels)
                parts = [self._run_batch(pixels[i:i + 1]) for i in range(pixels.shape[0])]
                labels, scores, finite = zip(*parts)
                return torch.cat(labels), torch.cat(scores), torch.stack(finite).all()
        return self._run_batch(pixels)

    def _run_batch(self, pixels: torch.Tensor):
        x = self.network_input(pixels)
        h = self.coarse_scores(x)
        labels, scores = self._final(h, tuple(x.shape[-2:]))
        return labels, scores, torch.isfinite(h).all()

    # -- public ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def run_smoothed(self, pixels: torch.Tensor, smoother) -> torch.Tensor:
        """Labels (N, H, W) of consecutive frames with their coarse scores averaged over time by
        ``smoother`` (``smoothing.ScoreSmoother``) before the final upsampling."""
        if pixels.device != self.device:
            raise ValueError(f"pixels are on {pixels.device}, the engine on {self.device}")
        n, h, w = self._batch_size(pixels)
        # As ``_run_device``: border-skipping CPU batches of large frames go frame by frame.
        step = n if self.border is None or n * h * w <= _BATCHED_PIXELS else 1
        out = []
        with self._lock:
            for i in range(0, n, step):
                part = pixels[i:i + step]
                x = self.network_input(part)
                coarse = self.coarse_scores(x)
                if self.dtype != torch.float32 and not bool(torch.isfinite(coarse).all()):
                    # The precision guard: these frames from the float32 reference, unsmoothed,
                    # and a fresh start (non-finite scores would poison the average for good).
                    smoother.reset()
                    out.append(self._rerun_float32(part)[0])
                    continue
                out.append(self._final(smoother.update(coarse, part), tuple(x.shape[-2:]))[0])
        return torch.cat(out)

    @torch.inference_mode()
    def run(self, pixels: torch.Tensor, return_scores: bool = False):
        """Labels (N, H, W) of a batch of pixels on the device (and the winning scores)."""
        labels, scores, finite = self.launch(pixels)
        labels, scores = self.settle(pixels, labels, scores, bool(finite))
        return (labels, scores) if return_scores else labels

    @torch.inference_mode()
    def run_to_host(self, pixels: torch.Tensor) -> torch.Tensor:
        """``run``'s labels, on the host. On a GPU the precision guard's flag is copied back
        asynchronously beside the labels, so the batch waits for the device once (``run`` waits for
        the flag, then its caller for the labels)."""
        labels, scores, finite = self.launch(pixels)
        if labels.device.type == "cuda":
            stream = torch.cuda.current_stream(labels.device)
            labels = labels.to("cpu", non_blocking=True)  # into pinned memory
            finite = finite.to("cpu", non_blocking=True)
            done = torch.cuda.Event()
            done.record(stream)
            done.synchronize()
        labels, _ = self.settle(pixels, labels, scores, bool(finite))
        return labels.cpu()

    @torch.inference_mode()
    def launch(self, pixels: torch.Tensor):
        """Queue one batch: (labels, scores, all-finite flag) as device tensors, without waiting
        for the device (``stream`` overlaps batches this way). Pass the flag's value to
        ``settle``."""
        if not isinstance(pixels, torch.Tensor):
            raise TypeError(f"pixels must be a torch.Tensor, got {type(pixels).__name__}")
        if pixels.device != self.device:
            raise ValueError(f"pixels are on {pixels.device}, the engine on {self.device}")
        try:
            if self.graphs is not None and pixels.dtype == torch.uint8:
                try:
                    return self.graphs.run(pixels)
                except torch.cuda.OutOfMemoryError:
                    raise
                except RuntimeError as e:
                    if self._graphs_named:
                        raise
                    self.graphs = None
                    warnings.warn(f"fcnfast: CUDA graph capture failed ({e}); running uncaptured "
                                  "from now on", RuntimeWarning, stacklevel=3)
            return self._run_device(pixels)
        except torch.cuda.OutOfMemoryError as e:
            return self._run_after_oom(pixels, e)

    @torch.inference_mode()
    def settle(self, pixels, labels, scores, finite: bool):
        """The precision guard: a low-precision batch with non-finite scores is redone in float32."""
        if self.dtype != torch.float32 and not finite:
            return self._rerun_float32(pixels)
        return labels, scores

    def _run_after_oom(self, pixels, error):
        n, h, w = self._batch_size(pixels)
        if self._fc_names and not self.fc_tile_rows:
            torch.cuda.empty_cache()
            self.fc_tile_rows = 8
            warnings.warn(f"fcnfast: out of GPU memory at {n}×{h}×{w}; running fc6/fc7 in row tiles "
                          "from now on", RuntimeWarning, stacklevel=4)
            try:
                return self._run_device(pixels)
            except torch.cuda.OutOfMemoryError as e:
                error = e
        raise RuntimeError(
            f"out of GPU memory running {self.reference.arch} on a batch of {n} frame(s) of {h}×{w} "
            f"in {str(self.dtype).replace('torch.', '')}; use a smaller batch_size (or smaller frames)"
        ) from error

    @staticmethod
    def _batch_size(pixels) -> Tuple[int, int, int]:
        if pixels.dtype == torch.uint8:
            return tuple(int(v) for v in pixels.shape[:3])
        return int(pixels.shape[0]), int(pixels.shape[2]), int(pixels.shape[3])

    @torch.inference_mode()
    def reference_scores(self, pixels: torch.Tensor):
        """(N, C, H, W) full-resolution scores of the float32 reference model (the ground truth:
        the precision guard's rerun and ``compare``); several heads: {head: scores}."""
        return model_scores(self.reference, pixels, self.convention)

    def _rerun_float32(self, pixels):
        """Non-finite scores in a low-precision run (fp16 overflow in fc6/fc7): redo the batch on the
        float32 reference, once with a warning."""
        if not self._warned_precision:
            self._warned_precision = True
            warnings.warn(f"fcnfast: non-finite class scores in {self.dtype}; rerunning in float32 "
                          "(further reruns are silent)", RuntimeWarning, stacklevel=3)
        scores = self.reference_scores(pixels)
        if isinstance(scores, dict):
            return self._stack([contract.argmax_labels(scores[h], True, self.dtype)
                                for h in self.reference.heads])
        return contract.argmax_labels(scores, True, self.dtype)

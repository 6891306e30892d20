"""Python side of the native head kernels: check, allocate, pass raw pointers.

One wrapper per op serves both native modules: CPU tensors go to ``fcnfast._C`` (backend "cpp"),
CUDA tensors to ``fcnfast._cuda`` (backend "cuda") on the current stream. The modules bind with
pybind11 on raw pointers, sizes, dtype codes and the stream handle (no libtorch), so the wrappers
check everything first (``checks``), make inputs contiguous and allocate the outputs.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np
import torch

from .. import _ext

from .. import contract

# Must match csrc/fcn_math.h's DType.
DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.uint8: 3,
              torch.int32: 4, torch.int64: 5}


def _module(t: torch.Tensor):
    return _ext.native_module("cuda" if t.is_cuda else "cpp")


def _stream_args(t: torch.Tensor) -> tuple:
    """The stream argument CUDA launchers take (none for the CPU module)."""
    if t.is_cuda:
        return (torch.cuda.current_stream(t.device).cuda_stream,)
    return ()


def _on_device(t: torch.Tensor):
    """A context that makes ``t``'s GPU the current one (nothing for CPU tensors)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def preprocess(frames, *, mean, std=None, scale=1.0, bgr=False, dtype=torch.float32,
               channels_last=False):
    mean, std, scale = contract.check_preprocess(frames, mean, std, scale, dtype, kernel=True)
    n, h, w, _ = frames.shape
    out = contract.new_network_input(frames, dtype, channels_last)
    if n == 0:
        return out
    frames = frames.contiguous()
    divide = std != (1.0, 1.0, 1.0)
    with _on_device(frames):
        _module(frames).preprocess(frames.data_ptr(), n, h, w, scale, list(mean), list(std),
                                   bool(bgr), divide, bool(channels_last), out.data_ptr(),
                                   DTYPE_CODE[dtype], *_stream_args(frames))
    return out


def overlay(frames, labels, palette, alpha=0.5, check_labels=True):
    alpha = contract.check_overlay(frames, labels, palette, alpha, check_labels)
    n, h, w, _ = frames.shape
    out = contract.new_output((n, h, w, 3), torch.uint8, frames.device)
    if n == 0:
        return out
    frames, labels, palette = frames.contiguous(), labels.contiguous(), palette.contiguous()
    with _on_device(frames):
        _module(frames).overlay(frames.data_ptr(), labels.data_ptr(), DTYPE_CODE[labels.dtype],
                                palette.data_ptr(), palette.shape[0], n, h, w, 1.0 - alpha, alpha,
                                out.data_ptr(), *_stream_args(frames))
    return out


def upsample_crop_add(x, weight, stride, skip=None, *, offset=(0, 0), skip_offset=(0, 0), size=None,
                      skip_weight=None, skip_bias=None, skip_scale=1.0):
    g, (soy, sox) = contract.check_upsample_crop_add(x, weight, stride, skip, offset, skip_offset,
                                                   size, skip_weight, skip_bias, skip_scale,
                                                   kernel=True)
    out = contract.new_output((g.n, g.c, g.out_h, g.out_w), x.dtype, x.device)
    if g.n == 0:
        return out
    # Depthwise when the weight is exactly diagonal bilinear: then only its (k, k) filter is passed.
    filt = contract.bilinear_filter(weight)
    bilinear = filt is not None
    w_arg = (filt if bilinear else weight).to(torch.float32).contiguous()
    x = x.contiguous()
    f = hs = ws = 0
    skip_ptr = sw_ptr = sb_ptr = 0
    channels_last = False
    if skip is not None:
        skip = skip.to(x.dtype)
        # Features to score in the trunk's channels-last layout are read as they are (transposing
        # pool3 to planes cost more than the fused scoring itself).
        channels_last = (skip_weight is not None and skip.dim() == 4 and not skip.is_contiguous()
                         and skip.is_contiguous(memory_format=torch.channels_last))
        if not channels_last:
            skip = skip.contiguous()
        f, hs, ws = (int(v) for v in skip.shape[1:])
        skip_ptr = skip.data_ptr()
        if skip_weight is not None:
            skip_weight = skip_weight.reshape(g.c, f).to(torch.float32).contiguous()
            sw_ptr = skip_weight.data_ptr()
        if skip_bias is not None:
            skip_bias = skip_bias.to(torch.float32).contiguous()
            sb_ptr = skip_bias.data_ptr()
    with _on_device(x):
        _module(x).upsample_crop_add(x.data_ptr(), w_arg.data_ptr(), bilinear, skip_ptr, sw_ptr,
                                     sb_ptr, g.n, g.c, g.h, g.w, g.k, g.s, g.oy, g.ox, g.out_h,
                                     g.out_w, f, hs, ws, soy, sox, float(skip_scale), channels_last,
                                     out.data_ptr(), DTYPE_CODE[x.dtype], *_stream_args(x))
    return out


# How upsample_crop_argmax's weight is passed; must match csrc/fcn_math.h's WeightKind.
WEIGHT_LEARNED, WEIGHT_BILINEAR_2D, WEIGHT_BILINEAR_SEPARABLE = 0, 1, 2


@lru_cache(maxsize=64)
def _separable_factor(k: int, dtype: torch.dtype, device: torch.device):
    """The bilinear filter's 1-D factor g (k,) float32 on ``device`` when the (k, k) filter in
    ``dtype`` (what ``contract.bilinear_filter`` returns, as float32) is exactly g[i]·g[j] in
    float32 — for float32 weights at FCN's kernel sizes; not for float16 k = 64 or bfloat16
    k >= 32, whose rounded filters are no product. None then: the kernels use the 2-D filter."""
    filt64 = contract.upsample_filt(k)
    # filt64[i, i] = a_i² rounded; sqrt of a correctly rounded square is exactly |a_i| (a_i > 0).
    g = torch.from_numpy(np.sqrt(np.diag(filt64)).copy()).to(torch.float32)
    filt = torch.from_numpy(filt64).to(dtype).to(torch.float32)
    if not torch.equal(g[:, None] * g[None, :], filt):
        return None
    return g.to(device)


def upsample_crop_argmax(x, weight, stride, offset, size, *, return_scores=False):
    g = contract.check_upsample_crop_argmax(x, weight, stride, offset, size, kernel=True)
    labels, scores = contract.new_argmax_outputs(x, g.out_h, g.out_w, return_scores)
    if g.n == 0:
        return (labels, scores) if return_scores else labels
    # Depthwise when the weight is exactly diagonal bilinear (checked once per layer, cached).
    filt = contract.bilinear_filter(weight)
    if filt is None:  # learned C×C: W as (k, k, C_in, C_out), the kernels' contiguous rows
        kind, w_arg = WEIGHT_LEARNED, weight.permute(2, 3, 0, 1).to(torch.float32).contiguous()
    else:
        factor = _separable_factor(g.k, weight.dtype, x.device)
        kind, w_arg = ((WEIGHT_BILINEAR_SEPARABLE, factor) if factor is not None
                       else (WEIGHT_BILINEAR_2D, filt))
    x = x.contiguous()
    with _on_device(x):
        _module(x).upsample_crop_argmax(x.data_ptr(), w_arg.data_ptr(), kind, g.n, g.c, g.h, g.w,
                                        g.k, g.s, g.oy, g.ox, g.out_h, g.out_w, labels.data_ptr(),
                                        DTYPE_CODE[labels.dtype],
                                        scores.data_ptr() if return_scores else 0,
                                        DTYPE_CODE[x.dtype], *_stream_args(x))
    return (labels, scores) if return_scores else labels


def interp_argmax(x, size, *, return_scores=False):
    out_h, out_w = contract.check_interp_argmax(x, size, kernel=True)
    n, c, h, w = x.shape
    labels, scores = contract.new_argmax_outputs(x, out_h, out_w, return_scores)
    if n == 0:
        return (labels, scores) if return_scores else labels
    x = x.contiguous()
    with _on_device(x):
        _module(x).interp_argmax(x.data_ptr(), n, c, h, w, out_h, out_w, contract.interp_scale(h, out_h),
                                 contract.interp_scale(w, out_w), labels.data_ptr(),
                                 DTYPE_CODE[labels.dtype],
                                 scores.data_ptr() if return_scores else 0, DTYPE_CODE[x.dtype],
                                 *_stream_args(x))
    return (labels, scores) if return_scores else labels


# --- Winograd F(m×m, 3×3) transforms of the CPU engine's 3×3 convolutions (engine/winograd.py) ---

WINOGRAD_DTYPES = (torch.float32, torch.bfloat16)
WINOGRAD_TILES = (2, 4)  # m: outputs per tile side; (m + 2)² tile points


def _cpp_has(entry: str) -> bool:
    """fcnfast._C is built with ``entry`` (a module built before it lacks it)."""
    return _ext.has_cpp_ops() and hasattr(_ext.native_module("cpp"), entry)


def _native_status(entry: str, what: str) -> tuple:
    """(ok, why not) of kernels built apart from the levels, as fcnfast._C's ``entry`` reports it."""
    if not _cpp_has(entry):
        return False, ("fcnfast._C is not built" if not _ext.has_cpp_ops() else
                       f"fcnfast._C predates {what}: rebuild it (pip install -e .)")
    ok, why = getattr(_ext.native_module("cpp"), entry)()
    return bool(ok), str(why)


def winograd_available() -> bool:
    """fcnfast._C is built with the Winograd transforms."""
    return _cpp_has("winograd_input")


def winograd_output_size(h: int, w: int, dilation: int, padding: int) -> tuple:
    """(H', W') of a stride-1 3×3 convolution of an H×W input; ValueError when empty."""
    oh, ow = h + 2 * padding - 2 * dilation, w + 2 * padding - 2 * dilation
    if oh < 1 or ow < 1:
        raise ValueError(f"a {h}×{w} input is too small for a 3×3 convolution of dilation {dilation} "
                         f"and padding {padding}")
    return oh, ow


def winograd_tiles(n: int, h: int, w: int, dilation: int, padding: int, tile: int = 2) -> int:
    """Tiles of a stride-1 3×3 convolution's output, ``tile``×``tile`` outputs each
    (csrc/cpu/winograd.cpp's tiling)."""
    winograd_points(tile)  # a tile the kernels have
    oh, ow = winograd_output_size(h, w, dilation, padding)
    return n * _tiles_along(oh, dilation, tile) * _tiles_along(ow, dilation, tile)


def winograd_points(tile: int) -> int:
    """Values per transformed tile of F(tile×tile, 3×3): (tile + 2)²."""
    if tile not in WINOGRAD_TILES:
        raise ValueError(f"Winograd tile must be one of {WINOGRAD_TILES}, got {tile}")
    return (tile + 2) ** 2


def _tiles_along(out: int, d: int, tile: int) -> int:
    """Tiles along one axis of ``out`` outputs: phase a < d has ⌈(out − a) / d⌉ outputs, ``tile``
    a tile, so ⌈(out − a) / (tile·d)⌉ tiles."""
    return sum(-(-(out - a) // (tile * d)) for a in range(min(d, out)))


def _check_winograd(name: str, t: torch.Tensor, shape: tuple, dtype: torch.dtype, layout: str):
    if t.device.type != "cpu":
        raise ValueError(f"{name}: the Winograd transforms run on CPU tensors, got {t.device}")
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
        raise ValueError(f"{name}: expected {tuple(shape)} {dtype}, got {tuple(t.shape)} {t.dtype}")
    ok = t.is_contiguous(memory_format=torch.channels_last) if layout == "nhwc" else t.is_contiguous()
    if not ok:
        raise ValueError(f"{name} must be {'channels-last' if layout == 'nhwc' else 'contiguous'}")


def _winograd_rows(name: str, t: torch.Tensor, tiles: int, by_point: bool, points: int) -> int:
    """The row count of a tile buffer, at least ``tiles``: (points, rows, ·) when ``by_point``,
    else (rows, points, ·)."""
    rows = (t.shape[1] if by_point else t.shape[0]) if t.dim() == 3 else -1
    if rows < tiles:
        want = f"({points}, rows ≥ {tiles}, ·)" if by_point else f"(rows ≥ {tiles}, {points}, ·)"
        raise ValueError(f"{name}: expected {want}, got {tuple(t.shape)}")
    return rows


def _tile_strides(t: torch.Tensor, by_point: bool):
    """(row stride, point stride) of a tile buffer, in elements."""
    return (t.stride(1), t.stride(0)) if by_point else (t.stride(0), t.stride(1))


def _tile_shape(rows: int, channels: int, by_point: bool, points: int) -> tuple:
    return (points, rows, channels) if by_point else (rows, points, channels)


def winograd_input(x: torch.Tensor, dilation: int, padding: int, v: torch.Tensor,
                   by_point: bool = True, tile: int = 2) -> torch.Tensor:
    """x channels-last (N, C, H, W) float32/bfloat16 → v, the F(tile×tile, 3×3) transform of tile
    t's point q at v[q, t] (P, rows ≥ tiles, C; P = (tile + 2)² points) when ``by_point`` (a batched
    GEMM's operand), else at v[t, q] (rows, P, C; a P-group 1×1 convolution's): the transformed
    tiles in its first rows, the rest left as they were."""
    if x.dim() != 4 or x.dtype not in WINOGRAD_DTYPES:
        raise ValueError(f"winograd_input: x must be (N, C, H, W) float32 or bfloat16, got "
                         f"{tuple(x.shape)} {x.dtype}")
    n, c, h, w = x.shape
    points = winograd_points(tile)
    _check_winograd("x", x, x.shape, x.dtype, "nhwc")
    rows = _winograd_rows("v", v, winograd_tiles(n, h, w, dilation, padding, tile), by_point, points)
    _check_winograd("v", v, _tile_shape(rows, c, by_point, points), x.dtype, "rows")
    _ext.native_module("cpp").winograd_input(x.data_ptr(), n, h, w, c, dilation, padding, tile,
                                             v.data_ptr(), *_tile_strides(v, by_point),
                                             DTYPE_CODE[x.dtype])
    return v


def winograd_output(m: torch.Tensor, bias: torch.Tensor, relu: bool, size, dilation: int,
                    padding: int, y: torch.Tensor, by_point: bool = True, tile: int = 2) -> torch.Tensor:
    """m (P, rows ≥ tiles, K) when ``by_point``, else (rows ≥ tiles, P, K), the F(tile×tile, 3×3)
    tiles' products in its first rows → y channels-last
    (N, K, H', W') of the convolution of an (H, W) = ``size`` input, plus ``bias`` (float32, K),
    then ReLU when ``relu``."""
    n, k, oh, ow = y.shape
    h, w = size
    want = winograd_output_size(h, w, dilation, padding)
    if (oh, ow) != want:
        raise ValueError(f"winograd_output: y is {oh}×{ow}, the convolution of {h}×{w} gives "
                         f"{want[0]}×{want[1]}")
    if m.dtype not in WINOGRAD_DTYPES:
        raise ValueError(f"winograd_output: m must be float32 or bfloat16, got {m.dtype}")
    points = winograd_points(tile)
    rows = _winograd_rows("m", m, winograd_tiles(n, h, w, dilation, padding, tile), by_point, points)
    _check_winograd("m", m, _tile_shape(rows, k, by_point, points), m.dtype, "rows")
    _check_winograd("bias", bias, (k,), torch.float32, "rows")
    _check_winograd("y", y, y.shape, m.dtype, "nhwc")
    _ext.native_module("cpp").winograd_output(m.data_ptr(), *_tile_strides(m, by_point), bias.data_ptr(),
                                              bool(relu), n, h, w, k, dilation, padding, tile, y.data_ptr(),
                                              DTYPE_CODE[m.dtype])
    return y


# --- a bfloat16 Winograd F(2×2, 3×3) layer in one pass, on AVX-512 BF16 (engine/winograd.py) -------

WINOGRAD_BF16_COLS = 64  # K of winograd_bf16_conv is a multiple of this, C even (csrc/cpu/winograd_bf16.h)


def winograd_bf16_status() -> tuple:
    """(whether winograd_bf16_conv runs here, why not): a module built with the AVX-512 BF16
    kernels and a CPU (and OS) with AVX-512 BF16."""
    return _native_status("winograd_bf16_status", "the AVX-512 BF16 Winograd layer")


def winograd_bf16_available() -> bool:
    return winograd_bf16_status()[0]


def winograd_bf16_shape_ok(c: int, k: int) -> bool:
    """Whether winograd_bf16_conv takes a C→K layer."""
    return c > 0 and c % 2 == 0 and k > 0 and k % WINOGRAD_BF16_COLS == 0


def winograd_bf16_pack(u: torch.Tensor) -> torch.Tensor:
    """U (16, C, K) bfloat16, F(2×2, 3×3)'s filter transform (point, input channel, output channel)
    → the 1-D tensor of 16·C·K elements winograd_bf16_conv reads."""
    ok, why = winograd_bf16_status()
    if not ok:
        raise RuntimeError(f"winograd_bf16_conv cannot run here: {why}")
    if u.dim() != 3 or u.shape[0] != 16 or not winograd_bf16_shape_ok(u.shape[1], u.shape[2]):
        raise ValueError(f"winograd_bf16_pack: expected U (16, C even, K a multiple of "
                         f"{WINOGRAD_BF16_COLS}), got {tuple(u.shape)}")
    _check_winograd("u", u, u.shape, torch.bfloat16, "rows")
    packed = torch.empty(u.numel(), dtype=torch.bfloat16)
    _ext.native_module("cpp").winograd_bf16_pack(u.data_ptr(), u.shape[1], u.shape[2], packed.data_ptr())
    return packed


def winograd_bf16_conv(x: torch.Tensor, packed: torch.Tensor, bias: "torch.Tensor | None", relu: bool,
                       dilation: int, padding: int, y: torch.Tensor) -> torch.Tensor:
    """The stride-1 3×3 convolution (``dilation``, zero ``padding``) of x channels-last (N, C, H, W)
    bfloat16 whose F(2×2, 3×3) filter transform winograd_bf16_pack packed, plus ``bias`` (float32,
    K, or None), then ReLU when ``relu`` → y channels-last (N, K, H', W') bfloat16."""
    if x.dim() != 4 or y.dim() != 4:
        raise ValueError(f"winograd_bf16_conv: x and y must be (N, C, H, W), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    n, c, h, w = x.shape
    k = y.shape[1]
    if not winograd_bf16_shape_ok(c, k) or packed.numel() != 16 * c * k:
        raise ValueError(f"winograd_bf16_conv: a {c}→{k} layer (C even, K a multiple of "
                         f"{WINOGRAD_BF16_COLS}) with a pack of {16 * c * k} elements, got {packed.numel()}")
    if tuple(y.shape) != (n, k, *winograd_output_size(h, w, dilation, padding)):
        raise ValueError(f"winograd_bf16_conv: y is {tuple(y.shape)}, the convolution of {tuple(x.shape)} "
                         f"gives {(n, k, *winograd_output_size(h, w, dilation, padding))}")
    _check_winograd("x", x, x.shape, torch.bfloat16, "nhwc")
    _check_winograd("y", y, y.shape, torch.bfloat16, "nhwc")
    _check_winograd("packed", packed, (16 * c * k,), torch.bfloat16, "rows")
    if bias is not None:
        _check_winograd("bias", bias, (k,), torch.float32, "rows")
    _ext.native_module("cpp").winograd_bf16_conv(x.data_ptr(), n, h, w, c, int(dilation), int(padding),
                                                 packed.data_ptr(), k, 0 if bias is None else bias.data_ptr(),
                                                 bool(relu), y.data_ptr())
    return y


# --- cross-channel LRN of the CPU engine's AlexNet/GoogLeNet trunks (engine/layers.py) -------------

def lrn_available() -> bool:
    """fcnfast._C is built with the LRN kernel."""
    return _cpp_has("lrn")


def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """torch.nn.functional.local_response_norm(x, size, alpha, beta, k) of a (N, C, H, W) CPU
    float32/bfloat16/float16 map whose channels are contiguous per pixel (channels-last, or a
    view of one), computed in float32; the result channels-last in x's dtype."""
    if x.device.type != "cpu" or x.dim() != 4 or not x.dtype.is_floating_point or x.dtype not in DTYPE_CODE:
        raise ValueError(f"lrn: expected a (N, C, H, W) float CPU tensor, got {tuple(x.shape)} {x.dtype} "
                         f"on {x.device}")
    if size < 1:
        raise ValueError(f"lrn: size must be >= 1, got {size}")
    n, c, h, w = x.shape
    if x.stride(1) != 1 and c > 1:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty((n, c, h, w), dtype=x.dtype, memory_format=torch.channels_last)
    if y.numel():
        _ext.native_module("cpp").lrn(x.data_ptr(), n, c, h, w, x.stride(0), x.stride(2), x.stride(3),
                                      int(size), float(alpha), float(beta), float(k), y.data_ptr(),
                                      DTYPE_CODE[x.dtype])
    return y


# --- bfloat16 matrix products on the AMX tile unit: the CPU engine's 1×1 layers (engine/amx.py) ---

AMX_BLOCK = 32  # K and N of amx_matmul are multiples of this (csrc/cpu/amx_matmul.h)


def amx_status() -> tuple:
    """(whether amx_matmul runs here, why not): a module built with the AMX kernels, a CPU with
    AMX-BF16 and AVX-512 BF16, and an OS that grants the tile state."""
    return _native_status("amx_status", "the AMX kernels")


def amx_available() -> bool:
    return amx_status()[0]


def _amx_rows(name: str, t: torch.Tensor, cols: int, batch: int | None) -> None:
    """``t`` is a (rows, cols) CPU bfloat16 matrix with unit column stride, or a (batch, rows,
    cols) stack of them when ``batch`` is given."""
    dims = 2 if batch is None else 3
    if (not isinstance(t, torch.Tensor) or t.device.type != "cpu" or t.dtype != torch.bfloat16
            or t.dim() != dims):
        want = "(M, ·)" if batch is None else "(B, M, ·)"
        raise ValueError(f"amx_matmul: {name} must be a {want} bfloat16 CPU tensor, got "
                         + (f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, torch.Tensor)
                            else type(t).__name__))
    rows, n = t.shape[-2:]
    if (t.stride(-1) != 1 and n > 1) or (rows > 1 and t.stride(-2) < n):
        raise ValueError(f"amx_matmul: {name}'s rows must be contiguous, got strides {t.stride()}")
    if n != cols:
        raise ValueError(f"amx_matmul: {name} has {n} columns, expected {cols}")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"amx_matmul: {name} holds {t.shape[0]} matrices, expected {batch}")


def amx_pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution's weight (N, K[, 1, 1]) in bfloat16 → the (N/32, K/32, 1024) tile layout
    amx_matmul reads; a stack (B, N, K) → (B, N/32, K/32, 1024). N and K must be multiples of 32."""
    ok, why = amx_status()
    if not ok:
        raise RuntimeError(f"amx_matmul cannot run here: {why}")
    if weight.dim() == 4 and tuple(weight.shape[2:]) == (1, 1):
        weight = weight.reshape(weight.shape[0], weight.shape[1])
    if weight.dim() not in (2, 3) or weight.dtype != torch.bfloat16 or weight.device.type != "cpu":
        raise ValueError(f"amx_pack_weight: expected an (N, K), (N, K, 1, 1) or (B, N, K) bfloat16 CPU "
                         f"weight, got {tuple(weight.shape)} {weight.dtype} on {weight.device}")
    n, k = weight.shape[-2:]
    if n % AMX_BLOCK or k % AMX_BLOCK or not n or not k:
        raise ValueError(f"amx_pack_weight: N and K must be positive multiples of {AMX_BLOCK}, got "
                         f"N={n}, K={k}")
    stack = weight.reshape(-1, n, k).contiguous()
    packed = torch.empty((stack.shape[0], n // AMX_BLOCK, k // AMX_BLOCK, AMX_BLOCK * AMX_BLOCK),
                         dtype=torch.bfloat16)
    for w, out in zip(stack, packed):
        _ext.native_module("cpp").amx_pack_weight(w.data_ptr(), n, k, out.data_ptr())
    return packed if weight.dim() == 3 else packed[0]


def amx_matmul(a: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None,
               relu: bool = False, residual: torch.Tensor | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """out (M, N) = act(a (M, K) · Wᵀ + bias (+ residual)) in bfloat16 with float32 sums, each
    rounded once; ``packed`` is amx_pack_weight(W); ``bias`` float32 (N); ReLU when ``relu``.
    ``residual`` (M, N) may be ``out`` itself (a residual block's end, in place). Rows need only
    contiguous columns (a channels-last map's pixels: x.permute(0, 2, 3, 1).reshape(M, K)).
    A stack — a (B, M, K), packed from (B, N, K), out (B, M, N) — runs the B products in one call
    (no residual)."""
    if packed.dim() not in (3, 4) or packed.dtype != torch.bfloat16 or packed.shape[-1] != AMX_BLOCK ** 2 \
            or not packed.is_contiguous():
        raise ValueError(f"amx_matmul: packed must come from amx_pack_weight, got {tuple(packed.shape)} "
                         f"{packed.dtype}")
    batch = packed.shape[0] if packed.dim() == 4 else None
    n, k = packed.shape[-3] * AMX_BLOCK, packed.shape[-2] * AMX_BLOCK
    _amx_rows("a", a, k, batch)
    m = a.shape[-2]
    if bias is not None and (bias.dtype != torch.float32 or tuple(bias.shape) != (n,)
                             or not bias.is_contiguous() or bias.device.type != "cpu"):
        raise ValueError(f"amx_matmul: bias must be a contiguous float32 ({n},) CPU tensor, got "
                         f"{tuple(bias.shape)} {bias.dtype}")
    if out is None:
        out = torch.empty((m, n) if batch is None else (batch, m, n), dtype=torch.bfloat16)
    _amx_rows("out", out, n, batch)
    if residual is not None:
        if batch is not None:
            raise ValueError("amx_matmul: a stack of products takes no residual")
        _amx_rows("residual", residual, n, None)
        if residual.shape[0] != m:
            raise ValueError(f"amx_matmul: residual has {residual.shape[0]} rows, a has {m}")
    if out.shape[-2] != m:
        raise ValueError(f"amx_matmul: out has {out.shape[-2]} rows, a has {m}")
    if m:
        _ext.native_module("cpp").amx_matmul(
            a.data_ptr(), m, k, max(a.stride(-2), k), packed.data_ptr(), n,
            0 if bias is None else bias.data_ptr(), 0 if residual is None else residual.data_ptr(),
            n if residual is None else max(residual.stride(0), n), out.data_ptr(), max(out.stride(-2), n),
            bool(relu), batch or 1, a.stride(0) if batch else 0, out.stride(0) if batch else 0)
    return out

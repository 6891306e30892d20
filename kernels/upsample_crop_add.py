"""Op 1 of head-ops.md: ``crop(convT(x, W, s)) + crop(skip score)`` in one Triton kernel.

Each program computes one [BLOCK_C classes, BLOCK_P output pixels] tile of the cropped output and
never materialises the full transposed-conv map. With k <= 2s every output pixel has at most 2×2
input taps (``common.deconv_taps``). Two paths, picked once per call by ``contract.bilinear_filter``:

* depthwise (diagonal bilinear weight): pixels in natural row-major order (coalesced loads and
  stores); each value is Σ of <= 4 taps x[n, c, iy, ix] · filt[ky, kx].
* general (learned C×C weight): the output is split by *phase* (fy mod s, fx mod s). All pixels of
  one phase share the kernel indices (ky, kx), so each of the 4 taps is a GEMM
  W[:, :, ky, kx]ᵀ (C_out × C_in) · x-gather (C_in × pixels), accumulated in float32 over chunks
  of BLOCK_CI input classes (``common.dot_tiles``): float16/bfloat16 operands when x is (tensor
  cores; the weight rounded to x's dtype in registers), IEEE float32 when x is float32. Every
  tile dim is a power of two >= 16; classes past C are masked loads (zeros in registers), never
  padding in memory.

The optional skip term is added in the same tile: a precomputed score map is gathered, or the fused
1×1 scoring ``bias + W_skip · (scale · feat)`` is a GEMM looped over chunks of BLOCK_F features, so
score_pool4 / score_pool3 are not separate launches.

Grid: (pixel tiles [× the min(s, H)·min(s, W) phases present in the crop, general path],
class blocks, batch).
"""
import torch
import triton
import triton.language as tl

from fcnfast import contract

from . import common
from .common import (DOT_FLOAT32, block_size, corner_masks, corner_offsets, deconv_taps, dot_mode,
                     dot_tiles, num_warps_for)

_SKIP_NONE, _SKIP_SCORES, _SKIP_FEATURES = 0, 1, 2
_MAX_GRID_Z = 65535  # CUDA's limit on grid dims 1 and 2; the batch is launched in chunks


@triton.jit
def _skip_tile(skip_ptr, sw_ptr, sb_ptr, n, cls, cmask, y, x, pmask, C, F, HS, WS, soy, sox, scale,
               SKIP: tl.constexpr, HAS_BIAS: tl.constexpr, SKIP_DOT: tl.constexpr,
               BLOCK_C: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_P: tl.constexpr):
    """The skip term of a [BLOCK_C, BLOCK_P] tile in float32: the skip map read at the output
    pixels (y, x) + (soy, sox): scores directly (SKIP=1), or features scored by the 1×1 conv
    ``bias + W · (scale · feat)`` (SKIP=2, in ``common.dot_tiles`` mode SKIP_DOT)."""
    spix = (y + soy) * WS + (x + sox)  # [P] position in one skip plane
    if SKIP == 1:
        offs = (n * C + cls.to(tl.int64))[:, None] * HS * WS + spix[None, :]
        v = tl.load(skip_ptr + offs, mask=cmask[:, None] & pmask[None, :], other=0.0).to(tl.float32)
    else:
        feat = skip_ptr + n * F * HS * WS
        fs = tl.arange(0, BLOCK_F)
        v = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
        for f0 in range(0, F, BLOCK_F):
            f = f0 + fs
            fmask = f < F
            v += dot_tiles(sw_ptr + cls[:, None] * F + f[None, :], cmask[:, None] & fmask[None, :],
                           feat + f.to(tl.int64)[:, None] * HS * WS + spix[None, :],
                           fmask[:, None] & pmask[None, :], SKIP_DOT)
        v = v * scale
        if HAS_BIAS:
            b = tl.load(sb_ptr + cls, mask=cmask, other=0.0).to(tl.float32)
            v += b[:, None]
    return v


@triton.jit
def _phase_taps(r, s: tl.constexpr, k: tl.constexpr):
    """A phase's two taps on one axis (full-map coordinate ≡ r mod s): their kernel indices r and
    r + s, clamped in range, and whether each is a real tap (< k)."""
    return tl.minimum(r, k - 1), tl.minimum(r + s, k - 1), r < k, r + s < k


@triton.jit
def _depthwise_tap(x_rows, f_ptrs, pix, valid, mask2):
    """One of the <= 4 taps of the depthwise path on [C, P]: x[c, iy, ix] · filt[ky, kx], with
    ``pix`` = iy·w + ix and ``f_ptrs`` at filt[ky, kx] (indices clamped in range by deconv_taps)."""
    f = tl.load(f_ptrs)
    v = tl.load(x_rows + pix[None, :], mask=mask2 & valid[None, :], other=0.0)
    return v.to(tl.float32) * f[None, :]


@triton.jit
def _upsample_crop_add_kernel(
        x_ptr, w_ptr, skip_ptr, sw_ptr, sb_ptr, out_ptr,
        C, h, w, H, W, oy, ox, HP, WP, PTILES, PCOLS, F, HS, WS, soy, sox, scale,
        s: tl.constexpr, k: tl.constexpr, BILINEAR: tl.constexpr, SKIP: tl.constexpr,
        HAS_BIAS: tl.constexpr, DOT: tl.constexpr, SKIP_DOT: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_CI: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_P: tl.constexpr):
    pid_p = tl.program_id(0)
    cls = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = tl.program_id(2).to(tl.int64)
    cmask = cls < C
    lanes = tl.arange(0, BLOCK_P)

    if BILINEAR:
        # Natural row-major pixel order.
        p = pid_p * BLOCK_P + lanes
        pmask = p < H * W
        y = p // W
        x = p % W
    else:
        # Phases (ry, rx) = (fy mod s, fx mod s) of the full map, enumerated by their first output
        # pixel (y0, x0) < (s, s) so that none is empty (PCOLS = min(s, W) phase columns). A
        # phase's pixels are the grid (y0 + j·s, x0 + i·s) inside the crop, at most HP × WP of
        # them, in PTILES tiles.
        phase = pid_p // PTILES
        y0 = phase // PCOLS
        x0 = phase % PCOLS
        ry = (y0 + oy) % s
        rx = (x0 + ox) % s
        q = (pid_p % PTILES) * BLOCK_P + lanes
        y = y0 + (q // WP) * s
        x = x0 + (q % WP) * s
        pmask = (q < HP * WP) & (y < H) & (x < W)
    y = tl.where(pmask, y, 0)  # keep masked lanes' addresses inside the maps
    x = tl.where(pmask, x, 0)

    iy0, ky0, vy0, iy1, ky1, vy1 = deconv_taps(y + oy, s, k, h)
    ix0, kx0, vx0, ix1, kx1, vx1 = deconv_taps(x + ox, s, k, w)
    p00, p01, p10, p11 = corner_offsets(iy0, iy1, ix0, ix1, w)
    v00, v01, v10, v11 = corner_masks(vy0 & pmask, vy1 & pmask, vx0, vx1)

    x_img = x_ptr + n * C * h * w
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    if BILINEAR:
        x_rows = x_img + cls.to(tl.int64)[:, None] * h * w
        m2 = cmask[:, None]
        acc += _depthwise_tap(x_rows, w_ptr + ky0 * k + kx0, p00, v00, m2)
        acc += _depthwise_tap(x_rows, w_ptr + ky0 * k + kx1, p01, v01, m2)
        acc += _depthwise_tap(x_rows, w_ptr + ky1 * k + kx0, p10, v10, m2)
        acc += _depthwise_tap(x_rows, w_ptr + ky1 * k + kx1, p11, v11, m2)
    else:
        # The kernel indices of this phase, one per tap, shared by the whole tile.
        kya, kyb, ok_ya, ok_yb = _phase_taps(ry, s, k)
        kxa, kxb, ok_xa, ok_xb = _phase_taps(rx, s, k)
        cis = tl.arange(0, BLOCK_CI)
        for ci0 in range(0, C, BLOCK_CI):
            ci = ci0 + cis
            cimask = ci < C
            x_rows = x_img + ci.to(tl.int64)[:, None] * h * w  # [CI, 1]
            xm = cimask[:, None]
            # W[ci, co, ky, kx] as a [C_out, C_in] tile
            w_tile = w_ptr + ci.to(tl.int64)[None, :] * C * k * k + (cls * k * k)[:, None]
            wm = cmask[:, None] & cimask[None, :]
            # Tap (ky, kx): W[:, :, ky, kx]ᵀ · x at (iy, ix). A tap whose kernel index is >= k
            # (k < 2s) is skipped for the whole tile.
            if ok_ya & ok_xa:
                acc += dot_tiles(w_tile + kya * k + kxa, wm,
                                 x_rows + p00[None, :], xm & v00[None, :], DOT)
            if ok_ya & ok_xb:
                acc += dot_tiles(w_tile + kya * k + kxb, wm,
                                 x_rows + p01[None, :], xm & v01[None, :], DOT)
            if ok_yb & ok_xa:
                acc += dot_tiles(w_tile + kyb * k + kxa, wm,
                                 x_rows + p10[None, :], xm & v10[None, :], DOT)
            if ok_yb & ok_xb:
                acc += dot_tiles(w_tile + kyb * k + kxb, wm,
                                 x_rows + p11[None, :], xm & v11[None, :], DOT)

    if SKIP != 0:
        acc += _skip_tile(skip_ptr, sw_ptr, sb_ptr, n, cls, cmask, y, x, pmask, C, F, HS, WS,
                          soy, sox, scale, SKIP, HAS_BIAS, SKIP_DOT, BLOCK_C, BLOCK_F, BLOCK_P)

    out = out_ptr + n * C * H * W + cls.to(tl.int64)[:, None] * H * W + (y * W + x)[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=cmask[:, None] & pmask[None, :])


def _settings(c: int, f: int, pixels: int, bilinear: bool, fused: bool, interpreted: bool):
    """(BLOCK_C, BLOCK_CI, BLOCK_F, BLOCK_P, num_warps). tl.dot needs every dim >= 16; the
    interpreter pays per program and per op, not per element, so it gets big pixel tiles (but
    its tl.dot is a plain loop: class blocks stay <= 64 so padding C wastes little). On a GPU
    the depthwise path does one class × 1024 pixels per program (fastest of 1/4/16 classes ×
    1024/4096/16384 elements on an H200, 8×21×500×500 upscore8)."""
    if bilinear and not fused:
        block_c = block_size(c, cap=256 if interpreted else 1, floor=1)
    else:
        block_c = block_size(c, cap=64, floor=16)
    chunk_cap = 64 if interpreted else 32
    block_ci = 16 if bilinear else block_size(c, cap=chunk_cap)
    block_f = block_size(f, cap=chunk_cap) if fused else 16
    budget = (1 << 16) if interpreted else (1024 if bilinear and not fused else 8192)
    block_p = block_size(pixels, cap=max(16, budget // block_c), floor=16)
    return block_c, block_ci, block_f, block_p, num_warps_for(block_c * block_p)


def upsample_crop_add(x, weight, stride, skip=None, *, offset=(0, 0), skip_offset=(0, 0), size=None,
                      skip_weight=None, skip_bias=None, skip_scale=1.0):
    """crop(convT(x, weight, stride), offset, size) + crop(skip score, skip_offset, size); the
    semantics of ``fcnfast.ops.reference.upsample_crop_add``, in one launch."""
    g, (soy, sox) = contract.check_upsample_crop_add(x, weight, stride, skip, offset, skip_offset,
                                                   size, skip_weight, skip_bias, skip_scale,
                                                   kernel=True)
    out = contract.new_output((g.n, g.c, g.out_h, g.out_w), x.dtype, x.device)
    if g.n == 0:
        return out
    filt = contract.bilinear_filter(weight)
    bilinear = filt is not None
    x = x.contiguous()
    w_arg = filt.contiguous() if bilinear else weight.contiguous()

    if skip is None:
        mode, f, hs, ws = _SKIP_NONE, 0, 1, 1
        skip_arg = sw_arg = sb_arg = x  # never read
    else:
        skip_arg = skip.contiguous()
        f, hs, ws = int(skip.shape[1]), int(skip.shape[2]), int(skip.shape[3])
        if skip_weight is None:
            mode, sw_arg = _SKIP_SCORES, x
        else:
            mode, sw_arg = _SKIP_FEATURES, skip_weight.reshape(g.c, f).contiguous()
        sb_arg = x if skip_bias is None else skip_bias.contiguous()
    fused = mode == _SKIP_FEATURES

    interpreted = common.interpreted(x)
    hp, wp = triton.cdiv(g.out_h, g.s), triton.cdiv(g.out_w, g.s)  # largest phase grid
    pixels = g.out_h * g.out_w if bilinear else hp * wp
    block_c, block_ci, block_f, block_p, warps = _settings(g.c, f, pixels, bilinear, fused,
                                                           interpreted)
    ptiles = triton.cdiv(pixels, block_p)
    pcols = min(g.s, g.out_w)
    # General path: PTILES tiles for each phase present in the crop.
    tiles = ptiles if bilinear else ptiles * min(g.s, g.out_h) * pcols

    for n0 in range(0, g.n, _MAX_GRID_Z):
        n1 = min(g.n, n0 + _MAX_GRID_Z)
        grid = (tiles, triton.cdiv(g.c, block_c), n1 - n0)
        _upsample_crop_add_kernel[grid](
            x[n0:n1], w_arg, skip_arg[n0:n1] if mode else skip_arg, sw_arg, sb_arg, out[n0:n1],
            g.c, g.h, g.w, g.out_h, g.out_w, g.oy, g.ox, hp, wp, ptiles, pcols,
            f, hs, ws, soy, sox, float(skip_scale),
            s=g.s, k=g.k, BILINEAR=bilinear, SKIP=mode, HAS_BIAS=skip_bias is not None,
            DOT=dot_mode(x.element_size(), x.dtype == torch.bfloat16, interpreted),
            SKIP_DOT=dot_mode(skip.element_size(), skip.dtype == torch.bfloat16, interpreted)
            if fused else DOT_FLOAT32,
            BLOCK_C=block_c, BLOCK_CI=block_ci, BLOCK_F=block_f, BLOCK_P=block_p,
            num_warps=warps)
    return out

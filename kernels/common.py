"""Per-pixel arithmetic shared by the Triton head kernels, and their launch settings.

The deconvolution taps, the 2×2 tap offsets and masks, the tap GEMM, the argmax rule and
the pixel-strip prologue/label epilogue exist once here (the CUDA/C++ kernels get the same math
from csrc's host/device header). Kernels import triton/torch, ``fcnfast.contract`` and this
module, nothing else of fcnfast.
"""
import triton
import triton.language as tl


@triton.jit
def deconv_taps(o, s: tl.constexpr, k: tl.constexpr, n_in):
    """The (at most) two input taps of full-map coordinate ``o`` on one axis, for k <= 2s.

    Transposed conv: full[o] = Σ in[i]·w[o − i·s] over 0 <= o − i·s < k. With k <= 2s only
    i0 = o // s (kernel index o − i0·s < s) and i0 − 1 (index + s) can contribute.
    Returns (i0, k0, valid0, i1, k1, valid1); invalid taps have indices clamped in range.
    """
    i0 = o // s
    k0 = o - i0 * s
    valid0 = (i0 < n_in) & (k0 < k)
    i1 = i0 - 1
    k1 = k0 + s
    valid1 = (i1 >= 0) & (k1 < k)
    i0 = tl.minimum(i0, n_in - 1)
    i1 = tl.maximum(i1, 0)
    k0 = tl.minimum(k0, k - 1)
    k1 = tl.minimum(k1, k - 1)
    return i0, k0, valid0, i1, k1, valid1


@triton.jit
def argmax_update(best, best_idx, v, c):
    """torch.argmax's rule, classes visited in increasing order: a strictly larger score wins (ties
    keep the lowest index); the first NaN wins and stays."""
    take = (v > best) | ((v != v) & (best == best))
    return tl.where(take, v, best), tl.where(take, c, best_idx)


@triton.jit
def block_argmax(acc, cols, C):
    """(value, index) per row of a [P, CO] score block whose columns are classes ``cols``: the
    first NaN among the real classes (cols < C) if any, else the max and its lowest index."""
    real = cols[None, :] < C
    isnan = (acc != acc) & real
    any_nan = tl.max(isnan.to(tl.int32), axis=1) > 0
    first_nan = tl.min(tl.where(isnan, cols[None, :], 1073741824), axis=1)
    a = tl.where(real & (acc == acc), acc, float("-inf"))
    m = tl.max(a, axis=1)
    # Lowest column equal to the max; padded columns sort after the real ones.
    idx = tl.min(tl.where(a == m[:, None], cols[None, :], 1073741824), axis=1)
    return tl.where(any_nan, float("nan"), m), tl.where(any_nan, first_nan, idx)


@triton.jit
def gather4(base, o00, o01, o10, o11, m00, m01, m10, m11):
    """The four neighbours of each pixel (offsets from ``base``) as float32; masked ones read 0."""
    x00 = tl.load(base + o00, mask=m00, other=0.0).to(tl.float32)
    x01 = tl.load(base + o01, mask=m01, other=0.0).to(tl.float32)
    x10 = tl.load(base + o10, mask=m10, other=0.0).to(tl.float32)
    x11 = tl.load(base + o11, mask=m11, other=0.0).to(tl.float32)
    return x00, x01, x10, x11


@triton.jit
def corner_offsets(iy0, iy1, ix0, ix1, w):
    """Flat offsets ``iy·w + ix`` of the 2×2 (row, column) pairs, in the order 00, 01, 10, 11."""
    return iy0 * w + ix0, iy0 * w + ix1, iy1 * w + ix0, iy1 * w + ix1


@triton.jit
def corner_masks(vy0, vy1, vx0, vx1):
    """Validity of the 2×2 (row, column) pairs, in the order 00, 01, 10, 11."""
    return vy0 & vx0, vy0 & vx1, vy1 & vx0, vy1 & vx1


# dot_tiles' operand modes: IEEE float32; float16/bfloat16 operands (tensor cores); operands
# rounded to bfloat16 then multiplied in float32 (the same products: Triton 3.9's interpreter
# computes a bfloat16 tl.dot wrongly).
DOT_FLOAT32, DOT_HALF, DOT_HALF_ROUNDED = 0, 1, 2


def interpreted(t) -> bool:
    """Whether Triton runs the kernels on tensor ``t`` through its interpreter (CPU tensors, under
    TRITON_INTERPRET=1): the launchers size tiles for it and work around its bfloat16 tl.dot."""
    return t.device.type == "cpu"


def dot_mode(dtype_size: int, is_bfloat16: bool, interpreted: bool) -> int:
    """The dot_tiles mode for operands of B's element size (float32: 4)."""
    if dtype_size == 4:
        return DOT_FLOAT32
    return DOT_HALF_ROUNDED if interpreted and is_bfloat16 else DOT_HALF


@triton.jit
def dot_tiles(a_ptrs, a_mask, b_ptrs, b_mask, MODE: tl.constexpr):
    """``A @ B`` of two tiles (masked elements read 0), A [M, K] and B [K, N] (every dim a
    multiple of 16), accumulated in float32: a tap's or a 1×1 scoring's GEMM. With B float16 or
    bfloat16 (MODE != DOT_FLOAT32) A is rounded to B's dtype in registers, so a GPU multiplies on
    tensor cores (the contract's 1e-2 tolerance allows the rounding); else IEEE float32."""
    if MODE == 0:
        a = tl.load(a_ptrs, mask=a_mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptrs, mask=b_mask, other=0.0).to(tl.float32)
        return tl.dot(a, b, input_precision="ieee")
    b = tl.load(b_ptrs, mask=b_mask, other=0.0)
    a = tl.load(a_ptrs, mask=a_mask, other=0.0).to(b.dtype)
    if MODE == 1:
        return tl.dot(a, b, out_dtype=tl.float32)
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")


@triton.jit
def strip_pixels(H, W, BLOCK: tl.constexpr):
    """A pixel-strip program's share of an H×W output: image n = program_id(1) (int64), flat
    pixels p of strip program_id(0), their mask, row y and column x."""
    n = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    pmask = p < H * W
    y = p // W
    x = p - y * W
    return n, p, pmask, y, x


@triton.jit
def store_argmax(labels_ptr, scores_ptr, out, best_idx, best, mask, RETURN_SCORES: tl.constexpr):
    """Labels (and, with RETURN_SCORES, the winning scores) at flat output offsets ``out``."""
    tl.store(labels_ptr + out, best_idx.to(labels_ptr.dtype.element_ty), mask=mask)
    if RETURN_SCORES:
        tl.store(scores_ptr + out, best.to(scores_ptr.dtype.element_ty), mask=mask)


@triton.jit
def flat_index(pid, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """Element indices of program ``pid``'s block; int64 when the tensor has >= 2**31 elements."""
    if WIDE:
        i = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        i = pid * BLOCK + tl.arange(0, BLOCK)
    return i


# Above this many elements, flat offsets need int64.
INT32_LIMIT = 2 ** 31


def block_size(n: int, cap: int = 1024, floor: int = 16) -> int:
    """Next power of two >= n, within [floor, cap]."""
    return max(floor, min(cap, triton.next_power_of_2(max(int(n), 1))))


def num_warps_for(block_elems: int) -> int:
    """Liger's ladder: more warps for bigger tiles."""
    if block_elems >= 8192:
        return 16
    if block_elems >= 2048:
        return 8
    return 4

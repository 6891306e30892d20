"""Per-pixel arithmetic shared by the Triton head kernels, and their launch settings.

The deconvolution taps and the argmax rule exist once here (the CUDA/C++ kernels get the same
math from csrc's host/device header).
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
def gather4(base, o00, o01, o10, o11, m00, m01, m10, m11):
    """The four neighbours of each pixel (offsets from ``base``) as float32; masked ones read 0."""
    x00 = tl.load(base + o00, mask=m00, other=0.0).to(tl.float32)
    x01 = tl.load(base + o01, mask=m01, other=0.0).to(tl.float32)
    x10 = tl.load(base + o10, mask=m10, other=0.0).to(tl.float32)
    x11 = tl.load(base + o11, mask=m11, other=0.0).to(tl.float32)
    return x00, x01, x10, x11


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

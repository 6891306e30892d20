"""Op 3, ``interp_argmax``: labels = argmax_c F.interpolate(x, size, bilinear, align_corners=False).

One program = a strip of output pixels. Each pixel's two source rows/columns and their weights are
computed once (PyTorch's rule, below), then a runtime loop visits the classes in increasing order,
interpolating each in float32 and keeping a running argmax (``common.argmax_update``: ties →
lowest class, the first NaN wins). The interpolated logits are never written.

PyTorch's rule (aten/src/ATen/native/UpSample.h, ``compute_source_index_and_lambda``; the CUDA
kernel uses the same formula), per axis, in float32 for float inputs:
    in == out:  i0 = i1 = dst, l0 = 1, l1 = 0               (the CPU kernel's copy case)
    otherwise:  scale = float(in) / out                        (float32 division, on the host)
                src = max(scale * (dst + 0.5) - 0.5, 0)
                i0 = min(floor(src), in - 1);  i1 = i0 + (i0 < in - 1)
                l1 = clamp(src - i0, 0, 1);  l0 = 1 - l1
    value = l0y * (l0x * x[i0y, i0x] + l1x * x[i0y, i1x])
          + l1y * (l0x * x[i1y, i0x] + l1x * x[i1y, i1x])
A zero weight still multiplies its input, as in PyTorch, so a non-finite neighbour gives NaN.
"""
import triton
import triton.language as tl

from fcnfast import contract

from .common import (argmax_update, block_size, corner_offsets, gather4, num_warps_for,
                     store_argmax, strip_pixels)


@triton.jit
def _source(dst, n_in, n_out, scale):
    """Source indices (i0, i1) and weights (l0, l1) of output coordinates ``dst`` on one axis."""
    src = tl.fma(scale, dst.to(tl.float32) + 0.5, -0.5)  # one rounding, as PyTorch's kernels
    src = tl.maximum(src, 0.0)
    i0 = tl.minimum(src.to(tl.int32), n_in - 1)  # src >= 0: truncation is floor
    l1 = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
    i1 = i0 + tl.where(i0 < n_in - 1, 1, 0)
    same = n_in == n_out
    i0 = tl.where(same, dst, i0)
    i1 = tl.where(same, dst, i1)
    l1 = tl.where(same, 0.0, l1)
    return i0, i1, 1.0 - l1, l1


@triton.jit
def _interp_argmax_kernel(
    x_ptr, labels_ptr, scores_ptr,
    C, h, w, H, W, scale_h, scale_w,
    RETURN_SCORES: tl.constexpr, BLOCK: tl.constexpr,
):
    n, p, pmask, y, xo = strip_pixels(H, W, BLOCK)
    iy0, iy1, ly0, ly1 = _source(y, h, H, scale_h)
    ix0, ix1, lx0, lx1 = _source(xo, w, W, scale_w)
    o00, o01, o10, o11 = corner_offsets(iy0, iy1, ix0, ix1, w)
    hw = h * w
    xb = x_ptr + n * C * hw

    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK], dtype=tl.int32)
    for c in range(0, C):
        xc = xb + c * hw
        x00, x01, x10, x11 = gather4(xc, o00, o01, o10, o11, pmask, pmask, pmask, pmask)
        v = ly0 * (lx0 * x00 + lx1 * x01) + ly1 * (lx0 * x10 + lx1 * x11)
        best, best_idx = argmax_update(best, best_idx, v, c)

    store_argmax(labels_ptr, scores_ptr, n * H * W + p, best_idx, best, pmask, RETURN_SCORES)


def interp_argmax(x, size, *, return_scores=False):
    """argmax over classes of F.interpolate(x, size, bilinear); see fcnfast.ops."""
    out_h, out_w = contract.check_interp_argmax(x, size, kernel=True)
    n, c, h, w = x.shape
    labels, scores = contract.new_argmax_outputs(x, out_h, out_w, return_scores)
    if n == 0:
        return (labels, scores) if return_scores else labels
    x = x.contiguous()
    block = block_size(out_h * out_w, cap=512)
    grid = (triton.cdiv(out_h * out_w, block), n)
    _interp_argmax_kernel[grid](
        x, labels, scores if return_scores else labels, c, h, w, out_h, out_w,
        contract.interp_scale(h, out_h), contract.interp_scale(w, out_w),
        RETURN_SCORES=return_scores, BLOCK=block, num_warps=num_warps_for(block))
    return (labels, scores) if return_scores else labels


__all__ = ["interp_argmax"]

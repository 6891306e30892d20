"""Op 3, ``interp_argmax``: labels = argmax_c F.interpolate(x, size, bilinear, align_corners=False).

One program = a tile of TILE_H output rows × TILE_W columns, its classes as [columns, classes]
blocks: each output row reads its two source rows' class vectors for all the tile's columns at
once, interpolated along x into one block per source row (``_source_row``). Output rows that share
a source row (every row of an 8× upsampling shares both with its neighbours) reuse those blocks
instead of loading them again, whenever the classes fit in one block. The argmax over a block
keeps torch's rule (``common.block_argmax``); the interpolated logits are never written.

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

from .common import argmax_update, block_argmax, block_size, num_warps_for, store_argmax

# Output rows per program: an 8× upsampling's rows share source rows in runs of 8.
TILE_H = 8
# Classes per block; more classes are visited block by block (and rows no longer share loads).
MAX_CLASS_BLOCK = 32


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
def _source_row(xc, iy, w, ix0, ix1, lx0, lx1, mask):
    """Source row ``iy`` interpolated along x at the tile's columns: [columns, classes] float32,
    from the classes' planes at ``xc`` (a [1, classes] block of pointers)."""
    row = xc + iy * w
    x0 = tl.load(row + ix0[:, None], mask=mask, other=0.0).to(tl.float32)
    x1 = tl.load(row + ix1[:, None], mask=mask, other=0.0).to(tl.float32)
    return lx0[:, None] * x0 + lx1[:, None] * x1


@triton.jit
def _interp_argmax_kernel(
    x_ptr, labels_ptr, scores_ptr,
    C, h, w, H, W, scale_h, scale_w,
    RETURN_SCORES: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
    CLASS_BLOCK: tl.constexpr, ONE_BLOCK: tl.constexpr,
):
    n = tl.program_id(2).to(tl.int64)
    xo = tl.program_id(0) * TILE_W + tl.arange(0, TILE_W)
    xmask = xo < W
    ix0, ix1, lx0, lx1 = _source(xo, w, W, scale_w)
    hw = h * w
    xb = x_ptr + n * C * hw
    cls = tl.arange(0, CLASS_BLOCK)
    y_first = tl.program_id(1) * TILE_H

    # ONE_BLOCK: every class in one block, and the source rows (r0, r1) of the previous output
    # row, interpolated along x
    one_mask = xmask[:, None] & (cls < C)[None, :]
    one_xc = xb + (cls * hw)[None, :]
    h0 = tl.zeros([TILE_W, CLASS_BLOCK], tl.float32)
    h1 = tl.zeros([TILE_W, CLASS_BLOCK], tl.float32)
    r0 = y_first * 0 - 1
    r1 = r0
    for r in range(0, TILE_H):
        y = y_first + r
        iy0, iy1, ly0, ly1 = _source(y, h, H, scale_h)
        if ONE_BLOCK:
            if (iy0 != r0) | (iy1 != r1):
                if iy0 == r1:
                    h0 = h1
                else:
                    h0 = _source_row(one_xc, iy0, w, ix0, ix1, lx0, lx1, one_mask)
                h1 = _source_row(one_xc, iy1, w, ix0, ix1, lx0, lx1, one_mask)
                r0 = iy0
                r1 = iy1
            best, best_idx = block_argmax(ly0 * h0 + ly1 * h1, cls, C)
        else:
            best = tl.full([TILE_W], float("-inf"), tl.float32)
            best_idx = tl.zeros([TILE_W], dtype=tl.int32)
            for c0 in range(0, C, CLASS_BLOCK):
                mask = xmask[:, None] & ((c0 + cls) < C)[None, :]
                xc = xb + ((c0 + cls) * hw)[None, :]
                v = (ly0 * _source_row(xc, iy0, w, ix0, ix1, lx0, lx1, mask)
                     + ly1 * _source_row(xc, iy1, w, ix0, ix1, lx0, lx1, mask))
                val, idx = block_argmax(v, c0 + cls, C)
                best, best_idx = argmax_update(best, best_idx, val, idx)
        # the row test as a vector: the interpreter refuses a scalar & vector mask
        store_argmax(labels_ptr, scores_ptr, (n * H + y) * W + xo, best_idx, best,
                     xmask & (xo * 0 + y < H), RETURN_SCORES)


def interp_argmax(x, size, *, return_scores=False):
    """argmax over classes of F.interpolate(x, size, bilinear); see fcnfast.ops."""
    out_h, out_w = contract.check_interp_argmax(x, size, kernel=True)
    n, c, h, w = x.shape
    labels, scores = contract.new_argmax_outputs(x, out_h, out_w, return_scores)
    if n == 0:
        return (labels, scores) if return_scores else labels
    x = x.contiguous()
    class_block = block_size(c, cap=MAX_CLASS_BLOCK, floor=1)
    tile_w = block_size(out_w, cap=max(16, 2048 // class_block))
    grid = (triton.cdiv(out_w, tile_w), triton.cdiv(out_h, TILE_H), n)
    _interp_argmax_kernel[grid](
        x, labels, scores if return_scores else labels, c, h, w, out_h, out_w,
        contract.interp_scale(h, out_h), contract.interp_scale(w, out_w),
        RETURN_SCORES=return_scores, TILE_H=TILE_H, TILE_W=tile_w, CLASS_BLOCK=class_block,
        ONE_BLOCK=c <= class_block, num_warps=num_warps_for(class_block * tile_w))
    return (labels, scores) if return_scores else labels


__all__ = ["interp_argmax"]

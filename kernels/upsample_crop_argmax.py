"""Op 2, ``upsample_crop_argmax``: labels = argmax_c crop(convT(x, W, s), offset, size), one pass.

The full-resolution logits are never written: each program computes the class scores of its output
pixels in registers and keeps a running argmax (torch.argmax's rule: ties → lowest class, the first
NaN wins), accumulating in float32. Two kernels:

* ``_upsample_bilinear_argmax_kernel`` — W is diagonal bilinear (``contract.bilinear_filter``): the op
  is depthwise, each output class is 4 taps of its own input class. One program = a strip of
  output pixels; the tap positions and the 4 filter weights are computed once per pixel, then a
  runtime loop over the classes in increasing order (any C).
* ``_upsample_general_argmax_kernel`` — learned C×C weights. The tap weights of an output pixel
  depend only on its phase (full-map coordinate mod s), so one program = one phase (of
  min(s, H)·min(s, W)) × a tile of that phase's pixels: every tap is then a small GEMM
  ``X_tap[P, C_in] @ W[:, :, ky, kx][C_in, C_out]`` (``tl.dot``, IEEE float32). Output classes are
  visited in blocks, in increasing order; each block is reduced to (max and the first index of the
  max, or the first NaN) and merged with ``argmax_update``.

Reference fidelity, including non-finite inputs: the reference computes the dense transposed conv,
so an off-diagonal zero weight still multiplies every input class (0·inf = 0·NaN = NaN). A
non-finite input in class ci therefore makes every *other* class NaN at the pixels it reaches. The
general kernel does the same arithmetic; the bilinear kernel skips the zero products and
reproduces their effect at the end (see ``_upsample_bilinear_argmax_kernel``).
"""
import triton
import triton.language as tl

from fcnfast import contract

from .common import (argmax_update, block_argmax, block_size, corner_masks, corner_offsets,
                     deconv_taps, dot_tiles, gather4, num_warps_for, store_argmax, strip_pixels)


@triton.jit
def _upsample_bilinear_argmax_kernel(
    x_ptr, filt_ptr, labels_ptr, scores_ptr,
    C, h, w, H, W, oy, ox,
    S: tl.constexpr, K: tl.constexpr, RETURN_SCORES: tl.constexpr, BLOCK: tl.constexpr,
):
    n, p, pmask, y, xo = strip_pixels(H, W, BLOCK)

    # Taps of the full-map pixel (y + oy, xo + ox): rows iy0/iy1 with kernel rows ky0/ky1, etc.
    iy0, ky0, vy0, iy1, ky1, vy1 = deconv_taps(y + oy, S, K, h)
    ix0, kx0, vx0, ix1, kx1, vx1 = deconv_taps(xo + ox, S, K, w)
    m00, m01, m10, m11 = corner_masks(pmask & vy0, pmask & vy1, vx0, vx1)
    # The 4 filter weights (float32), filt[ky, kx] at ky·K + kx; 0 where the tap is invalid.
    q00, q01, q10, q11 = corner_offsets(ky0, ky1, kx0, kx1, K)
    f00, f01, f10, f11 = gather4(filt_ptr, q00, q01, q10, q11, m00, m01, m10, m11)
    o00, o01, o10, o11 = corner_offsets(iy0, iy1, ix0, ix1, w)
    hw = h * w
    xb = x_ptr + n * C * hw

    # Class 0 starts the running argmax (same result as argmax_update from -inf).
    x00, x01, x10, x11 = gather4(xb, o00, o01, o10, o11, m00, m01, m10, m11)
    v0 = (f00 * x00 + f01 * x01) + (f10 * x10 + f11 * x11)
    best = v0
    best_idx = tl.zeros([BLOCK], dtype=tl.int32)
    # A class's 4-tap sum is non-finite iff one of its valid inputs is (the bilinear weights are
    # positive and sum to 1, so a finite sum cannot overflow).
    bad0 = (v0 != v0) | (tl.abs(v0) == float("inf"))
    bad_rest = tl.zeros([BLOCK], dtype=tl.int1)
    for c in range(1, C):
        xc = xb + c * hw
        x00, x01, x10, x11 = gather4(xc, o00, o01, o10, o11, m00, m01, m10, m11)
        v = (f00 * x00 + f01 * x01) + (f10 * x10 + f11 * x11)
        best, best_idx = argmax_update(best, best_idx, v, c)
        bad_rest = bad_rest | (v != v) | (tl.abs(v) == float("inf"))

    # The reference's dense conv adds 0·x[ci] to every class co != ci: a non-finite input in class
    # ci makes all other classes NaN. With C > 1: a bad class >= 1 makes class 0 NaN (label 0); a
    # bad class 0 alone makes class 1 NaN, so the label is 0 if class 0 is itself NaN, else 1.
    spread = (bad0 | bad_rest) & (C > 1)
    best_idx = tl.where(spread, tl.where(bad_rest | (v0 != v0), 0, 1), best_idx)
    best = tl.where(spread, float("nan"), best)

    store_argmax(labels_ptr, scores_ptr, n * H * W + p, best_idx, best, pmask, RETURN_SCORES)


@triton.jit
def _upsample_general_argmax_kernel(
    x_ptr, w_ptr, labels_ptr, scores_ptr,
    C, h, w, H, W, oy, ox, phases_x, tiles_per_phase,
    S: tl.constexpr, K: tl.constexpr, RETURN_SCORES: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    phase = pid // tiles_per_phase
    tile = pid - phase * tiles_per_phase
    # The phase's first output row/column (< min(s, H) / min(s, W)), the output rows y0 + j·s and
    # columns x0 + i·s it owns, and their full-map row/column mod s (ry, rx).
    y0 = phase // phases_x
    x0 = phase - y0 * phases_x
    ry = (y0 + oy) % S
    rx = (x0 + ox) % S
    nj = (H - y0 + S - 1) // S
    ni = (W - x0 + S - 1) // S
    p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < nj * ni
    j = p // ni
    i = p - j * ni
    y = y0 + j * S
    xo = x0 + i * S
    iy0 = (y + oy) // S  # tap (iy0, ky = ry) and tap (iy0 - 1, ky = ry + s)
    ix0 = (xo + ox) // S

    hw = h * w
    xb = x_ptr + n * C * hw
    ci_r = tl.arange(0, BLOCK_CI)
    co_r = tl.arange(0, BLOCK_CO)
    best = tl.full([BLOCK_P], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_P], dtype=tl.int32)
    for co0 in range(0, C, BLOCK_CO):
        co = co0 + co_r
        acc = tl.zeros([BLOCK_P, BLOCK_CO], dtype=tl.float32)
        for t in tl.static_range(4):
            ky = ry + (t // 2) * S
            kx = rx + (t % 2) * S
            if (ky < K) & (kx < K):
                iy = iy0 - t // 2
                ix = ix0 - t % 2
                pv = pmask & (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                sp = (tl.minimum(tl.maximum(iy, 0), h - 1) * w
                      + tl.minimum(tl.maximum(ix, 0), w - 1))
                part = tl.zeros([BLOCK_P, BLOCK_CO], dtype=tl.float32)
                for ci0 in range(0, C, BLOCK_CI):
                    ci = ci0 + ci_r
                    # X_tap[P, C_in] @ W[ci, co, ky, kx][C_in, C_out]
                    part += dot_tiles(xb + ci[None, :] * hw + sp[:, None],
                                      pv[:, None] & (ci[None, :] < C),
                                      w_ptr + ci[:, None].to(tl.int64) * (C * K * K)
                                      + co[None, :] * (K * K) + (ky * K + kx),
                                      (ci[:, None] < C) & (co[None, :] < C), 0)  # DOT_FLOAT32
                # A tap outside the input is no term at all (not 0·w, which is NaN for w = NaN).
                acc += tl.where(pv[:, None], part, 0.0)
        blk_v, blk_i = block_argmax(acc, co, C)
        best, best_idx = argmax_update(best, best_idx, blk_v, blk_i)

    store_argmax(labels_ptr, scores_ptr, n * H * W + y * W + xo, best_idx, best, pmask,
                 RETURN_SCORES)


def upsample_crop_argmax(x, weight, stride, offset, size, *, return_scores=False):
    """argmax over classes of crop(convT(x, weight, stride), offset, size); see fcnfast.ops."""
    g = contract.check_upsample_crop_argmax(x, weight, stride, offset, size, kernel=True)
    labels, scores = contract.new_argmax_outputs(x, g.out_h, g.out_w, return_scores)
    if g.n == 0:
        return (labels, scores) if return_scores else labels
    filt = contract.bilinear_filter(weight)  # on the caller's tensor: the check is cached per layer
    x = x.contiguous()
    scores_arg = scores if return_scores else labels  # never written without RETURN_SCORES
    if filt is not None:
        block = block_size(g.out_h * g.out_w, cap=512)
        grid = (triton.cdiv(g.out_h * g.out_w, block), g.n)
        _upsample_bilinear_argmax_kernel[grid](
            x, filt, labels, scores_arg, g.c, g.h, g.w, g.out_h, g.out_w, g.oy, g.ox,
            S=g.s, K=g.k, RETURN_SCORES=return_scores, BLOCK=block, num_warps=num_warps_for(block))
    else:
        weight = weight.contiguous()
        phases_y, phases_x = min(g.s, g.out_h), min(g.s, g.out_w)
        per_phase = triton.cdiv(g.out_h, g.s) * triton.cdiv(g.out_w, g.s)  # at most
        block_p = block_size(per_phase, cap=64)
        block_ci = block_size(g.c, cap=32)
        block_co = block_size(g.c, cap=64)
        tiles = triton.cdiv(per_phase, block_p)
        grid = (phases_y * phases_x * tiles, g.n)
        _upsample_general_argmax_kernel[grid](
            x, weight, labels, scores_arg, g.c, g.h, g.w, g.out_h, g.out_w, g.oy, g.ox,
            phases_x, tiles,
            S=g.s, K=g.k, RETURN_SCORES=return_scores, BLOCK_P=block_p, BLOCK_CI=block_ci,
            BLOCK_CO=block_co, num_warps=num_warps_for(block_p * block_co))
    return (labels, scores) if return_scores else labels


__all__ = ["upsample_crop_argmax"]

"""Op 4, ``preprocess``: uint8 (N, H, W, 3) RGB frames → the network input (N, 3, H, W).

``y[n, oc, h, w] = (v·scale − mean[oc]) / std[oc]`` with ``v = frames[n, h, w, ic]`` (ic = oc, or
2 − oc for BGR nets), in float32 and in exactly the reference's order (multiply, subtract, IEEE
divide), then rounded once to the output dtype. One pass over the bytes.

Two layouts, one kernel each, sharing the per-value arithmetic:
- NCHW: a program owns BLOCK pixels of one image and writes them to the three channel planes
  (contiguous, vectorised stores).
- channels_last: input and output are both (N, H, W, 3) in memory, so the op is elementwise over
  the flat byte index (contiguous loads and stores; BGR reads the mirrored byte of the same pixel).

GPU exactness: ``/`` on fp32 lowers to an approximate divide in Triton, so the kernel uses
``div_rn``; the launch turns off FMA contraction so ``v·scale − mean`` rounds twice, as in PyTorch.
"""
import torch
import triton
import triton.language as tl

from fcnfast import contract

from .common import INT32_LIMIT, block_size, flat_index, num_warps_for


@triton.jit
def _normalize(v, scale, mean, std, DIVIDE: tl.constexpr):
    """(v·scale − mean) / std in float32 (the division skipped when every std is 1: x/1 == x)."""
    y = v.to(tl.float32) * scale - mean
    if DIVIDE:
        y = tl.math.div_rn(y, std)
    return y


@triton.jit
def _preprocess_nchw_kernel(src, dst, hw, blocks_per_image, scale,
                            m0, m1, m2, s0, s1, s2, plane0, plane1, plane2,
                            DIVIDE: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr):
    """One program: BLOCK pixels of one image. Input channel ic goes to plane ``plane<ic>`` (its
    output channel × H·W) with that output channel's mean ``m<ic>`` and std ``s<ic>``."""
    pid = tl.program_id(0)
    n = pid // blocks_per_image
    p = (pid - n * blocks_per_image) * BLOCK + tl.arange(0, BLOCK)
    if WIDE:
        p = p.to(tl.int64)
    mask = p < hw
    image = n.to(tl.int64) * hw * 3  # same element count in and out
    src_px = src + image + p * 3
    dst_px = dst + image + p
    out_ty = dst.dtype.element_ty
    v = tl.load(src_px, mask=mask)
    tl.store(dst_px + plane0, _normalize(v, scale, m0, s0, DIVIDE).to(out_ty), mask=mask)
    v = tl.load(src_px + 1, mask=mask)
    tl.store(dst_px + plane1, _normalize(v, scale, m1, s1, DIVIDE).to(out_ty), mask=mask)
    v = tl.load(src_px + 2, mask=mask)
    tl.store(dst_px + plane2, _normalize(v, scale, m2, s2, DIVIDE).to(out_ty), mask=mask)


@triton.jit
def _preprocess_nhwc_kernel(src, dst, total, scale, m0, m1, m2, s0, s1, s2,
                            BGR: tl.constexpr, DIVIDE: tl.constexpr, WIDE: tl.constexpr,
                            BLOCK: tl.constexpr):
    """Elementwise over the flat (N, H, W, 3) index i; output channel oc = i mod 3, whose
    mean/std are ``m<oc>``/``s<oc>``. BGR reads input channel 2 − oc of the same pixel."""
    pid = tl.program_id(0)
    i = flat_index(pid, BLOCK, WIDE)
    mask = i < total
    oc = i % 3
    if BGR:
        v = tl.load(src + i + 2 - 2 * oc, mask=mask)
    else:
        v = tl.load(src + i, mask=mask)
    mean = tl.where(oc == 0, m0, tl.where(oc == 1, m1, m2))
    std = tl.where(oc == 0, s0, tl.where(oc == 1, s1, s2))
    y = _normalize(v, scale, mean, std, DIVIDE)
    tl.store(dst + i, y.to(dst.dtype.element_ty), mask=mask)


def preprocess(frames, *, mean, std=None, scale=1.0, bgr=False, dtype=torch.float32,
               channels_last=False):
    """uint8 (N, H, W, 3) RGB frames → (N, 3, H, W) ``(v·scale − mean) / std`` in ``dtype``.

    ``mean``/``std`` are in the output channel order (BGR when ``bgr``). With ``channels_last`` the
    result is (N, 3, H, W) in the channels-last memory format.
    """
    mean, std, scale = contract.check_preprocess(frames, mean, std, scale, dtype, kernel=True)
    n, h, w, _ = frames.shape
    out = contract.new_network_input(frames, dtype, channels_last)
    if n == 0:
        return out
    frames = frames.contiguous()
    divide = any(s != 1.0 for s in std)
    hw = h * w
    if channels_last:
        total = n * hw * 3
        block = block_size(total, cap=2048)
        _preprocess_nhwc_kernel[(triton.cdiv(total, block),)](
            frames, out, total, scale, *mean, *std,
            BGR=bool(bgr), DIVIDE=divide, WIDE=total >= INT32_LIMIT, BLOCK=block,
            num_warps=num_warps_for(block), enable_fp_fusion=False)
    else:
        # Output channel of each input channel; its mean and std.
        oc = (2, 1, 0) if bgr else (0, 1, 2)
        block = block_size(hw, cap=1024)
        blocks = triton.cdiv(hw, block)
        _preprocess_nchw_kernel[(n * blocks,)](
            frames, out, hw, blocks, scale, *(mean[c] for c in oc), *(std[c] for c in oc),
            *(c * hw for c in oc),
            DIVIDE=divide, WIDE=hw * 3 >= INT32_LIMIT, BLOCK=block,
            num_warps=num_warps_for(block), enable_fp_fusion=False)
    return out

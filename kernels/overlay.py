"""Op 5, ``overlay``: uint8 frames (N, H, W, 3) blended with ``palette[labels]`` for video output.

``out = floor(frame·(1 − alpha) + colour·alpha + 0.5)`` in float32, in the reference's order (two
products, their sum, + 0.5: four roundings; FMA contraction is turned off at launch so the GPU
rounds the same way). Elementwise over the flat (N, H, W, 3) byte index: frame bytes and output
bytes move contiguously; the label of pixel i // 3 and its palette entry are gathers that hit
cache (three neighbouring lanes share one label; the palette is a few hundred bytes).
"""
import triton
import triton.language as tl

from fcnfast import contract

from .common import INT32_LIMIT, block_size, flat_index, num_warps_for


@triton.jit
def _overlay_kernel(frames, labels, palette, out, total, keep, alpha,
                    WIDE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    i = flat_index(pid, BLOCK, WIDE)
    mask = i < total
    pixel = i // 3
    c = i - pixel * 3
    label = tl.load(labels + pixel, mask=mask, other=0).to(tl.int32)
    colour = tl.load(palette + label * 3 + c, mask=mask, other=0).to(tl.float32)
    frame = tl.load(frames + i, mask=mask, other=0).to(tl.float32)
    mixed = frame * keep + colour * alpha
    y = tl.floor(mixed + 0.5)
    y = tl.minimum(tl.maximum(y, 0.0), 255.0)
    tl.store(out + i, y.to(tl.uint8), mask=mask)


def overlay(frames, labels, palette, alpha=0.5, check_labels=True):
    """uint8 (N, H, W, 3) frames blended with the (C, 3) uint8 ``palette`` colour of each label
    (labels (N, H, W) uint8/int32/int64 in [0, C)): floor((1−alpha)·frame + alpha·colour + 0.5)."""
    alpha = contract.check_overlay(frames, labels, palette, alpha, check_labels)
    out = contract.new_output(tuple(frames.shape), frames.dtype, frames.device)
    total = frames.numel()
    if total == 0:
        return out
    frames, labels, palette = frames.contiguous(), labels.contiguous(), palette.contiguous()
    block = block_size(total, cap=2048)
    # (1 - alpha) in double, then float32 at the call: as the reference's frame * (1.0 - alpha).
    _overlay_kernel[(triton.cdiv(total, block),)](
        frames, labels, palette, out, total, 1.0 - alpha, alpha,
        WIDE=total >= INT32_LIMIT, BLOCK=block, num_warps=num_warps_for(block),
        enable_fp_fusion=False)
    return out

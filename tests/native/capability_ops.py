"""Every native CPU op (backend="cpp") on small awkward inputs — odd sizes, crops off the block
grid, float32/float16/bfloat16, NaN and inf where the argmax kernels take their non-finite paths —
with fixed seeds, so that runs under different FCNFAST_CPU_CAPABILITY levels can be compared bit
for bit (tests/test_native_build.py).

As a script: ``python capability_ops.py OUT.pt`` saves {"level": the level fcnfast._C chose,
"outputs": run_all()} to OUT.pt.
"""
from __future__ import annotations

import sys

import torch

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _randn(*shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def _bilinear(c, k, dtype):
    from fcnfast.contract import upsample_filt

    w = torch.zeros(c, c, k, k, dtype=torch.float64)
    f = torch.from_numpy(upsample_filt(k))
    for i in range(c):
        w[i, i] = f
    return w.to(dtype)


def _with_nonfinite(x):
    x = x.clone()
    x[0, 1, 2, 3] = float("nan")
    x[-1, 0, 1, 1] = float("inf")
    x[-1, 2, 3, 0] = float("-inf")
    return x


def run_all() -> dict:
    import fcnfast.ops as ops

    out = {}
    c = 5
    for i, dt in enumerate(FLOATS):
        name = str(dt).replace("torch.", "")
        # upsample_crop_add: x (2, 5, 7, 9), k=4 s=2 → full 16×20, cropped to 11×13.
        x = _randn(2, c, 7, 9, seed=10 + i, dtype=dt)
        skip = _randn(2, c, 15, 17, seed=20 + i, dtype=dt)
        feat = _randn(2, 6, 15, 17, seed=30 + i, dtype=dt)
        sw = _randn(c, 6, 1, 1, seed=40 + i) / 3
        sb = _randn(c, seed=50 + i)
        learned = _randn(c, c, 4, 4, seed=60 + i, dtype=dt) / 3
        common = dict(offset=(1, 2), skip_offset=(3, 1), size=(11, 13), backend="cpp")
        out[f"add/bilinear/{name}"] = ops.upsample_crop_add(x, _bilinear(c, 4, dt), 2, skip, **common)
        out[f"add/learned/{name}"] = ops.upsample_crop_add(x, learned, 2, skip, **common)
        out[f"add/fused/{name}"] = ops.upsample_crop_add(
            x, _bilinear(c, 4, dt), 2, feat, skip_weight=sw.to(dt), skip_bias=sb.to(dt),
            skip_scale=0.01, **common)
        out[f"add/learned_fused/{name}"] = ops.upsample_crop_add(
            x, learned, 2, feat, skip_weight=sw.to(dt), **common)
        out[f"add/noskip/{name}"] = ops.upsample_crop_add(x, _bilinear(c, 4, dt), 2, None,
                                                          offset=(0, 1), size=(15, 18),
                                                          backend="cpp")
        # upsample_crop_argmax: k=16 s=8 (separable float32 filter; the 2-D filter in bfloat16
        # k=32 s=16) and a learned k=4 s=2, with and without non-finite inputs.
        xa = _randn(2, c, 5, 6, seed=70 + i, dtype=dt)
        for tag, xin in (("finite", xa), ("nonfinite", _with_nonfinite(xa))):
            out[f"argmax/bilinear16/{tag}/{name}"] = ops.upsample_crop_argmax(
                xin, _bilinear(c, 16, dt), 8, (5, 3), (37, 45), return_scores=True, backend="cpp")
            out[f"argmax/bilinear32/{tag}/{name}"] = ops.upsample_crop_argmax(
                xin, _bilinear(c, 32, dt), 16, (9, 17), (61, 83), return_scores=True,
                backend="cpp")
            out[f"argmax/learned/{tag}/{name}"] = ops.upsample_crop_argmax(
                xin, learned, 2, (1, 2), (9, 11), return_scores=True, backend="cpp")
        # interp_argmax: up 7×9 → 23×31 and down to 5×4.
        xi = _with_nonfinite(_randn(2, c, 7, 9, seed=80 + i, dtype=dt))
        out[f"interp/up/{name}"] = ops.interp_argmax(xi, (23, 31), return_scores=True,
                                                     backend="cpp")
        out[f"interp/down/{name}"] = ops.interp_argmax(xi[:, :, :, :8], (5, 4),
                                                       return_scores=True, backend="cpp")
        # preprocess: Caffe (BGR, 0-255, mean only) and torchvision (/255, mean/std, channels-last).
        g = torch.Generator().manual_seed(90 + i)
        frames = torch.randint(0, 256, (2, 13, 17, 3), dtype=torch.uint8, generator=g)
        out[f"preprocess/caffe/{name}"] = ops.preprocess(
            frames, mean=(104.0, 116.7, 122.7), bgr=True, dtype=dt, backend="cpp")
        out[f"preprocess/torchvision/{name}"] = ops.preprocess(
            frames, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255,
            dtype=dt, channels_last=True, backend="cpp")
    # The CPU engine's Winograd transforms: float32 and bfloat16, both tiles and layouts, channels
    # off the vector width (a register's tail), dilation 2, a NaN, an inf and a -0.
    for dt in (torch.float32, torch.bfloat16):
        name = str(dt).replace("torch.", "")
        x = _with_nonfinite(_randn(2, 37, 7, 9, seed=110, dtype=dt))
        x[0, 3, 1, 1] = -0.0
        x = x.contiguous(memory_format=torch.channels_last)
        for tile in (2, 4):
            points = ops.winograd_points(tile)
            tiles = ops.winograd_tiles(2, 7, 9, 2, 2, tile)
            for by_point in (True, False):
                shape = (points, tiles, 37) if by_point else (tiles, points, 37)
                v = torch.zeros(shape, dtype=dt)
                tag = f"{tile}/{'by_point' if by_point else 'by_tile'}/{name}"
                out[f"winograd_input/{tag}"] = ops.winograd_input(x, 2, 2, v, by_point, tile).clone()
                y = torch.empty(2, 37, 7, 9, dtype=dt).contiguous(memory_format=torch.channels_last)
                bias = _randn(37, seed=120)
                out[f"winograd_output/{tag}"] = ops.winograd_output(
                    v / 4, bias, tile == 2, (7, 9), 2, 2, y, by_point, tile)
    # overlay: every label dtype.
    g = torch.Generator().manual_seed(100)
    frames = torch.randint(0, 256, (2, 13, 17, 3), dtype=torch.uint8, generator=g)
    palette = torch.randint(0, 256, (7, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 7, (2, 13, 17), generator=g)
    for ldt in (torch.uint8, torch.int32, torch.int64):
        out[f"overlay/{ldt}"] = ops.overlay(frames, labels.to(ldt), palette, alpha=0.3,
                                            backend="cpp")
    return out


def level() -> str:
    import fcnfast._C as m

    return m.cpu_capability()


if __name__ == "__main__":
    torch.save({"level": level(), "outputs": run_all()}, sys.argv[1])

"""Compile every Triton head kernel for a Hopper GPU (sm_90) without one: run by
test_triton_sm90.py in a process without TRITON_INTERPRET, so ``@triton.jit`` gives real
JITFunctions. Each launcher is called on small CPU tensors with the GPU's launch settings; its
kernel launch is intercepted and compiled ahead of time (``triton.compile`` with an explicit
target and the ptxas bundled with Triton) instead of run. Prints one JSON line per compiled
specialisation: kernel, constexprs, shared memory.

    python tests/triton_sm90.py
"""
from __future__ import annotations

import json
import os
import sys

import torch

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("triton_sm90.py needs TRITON_INTERPRET unset: it compiles, it does not interpret")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from fcnfast.kernels import common  # noqa: E402
from fcnfast.models.init import bilinear_weight  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
# The most shared memory one block may have on sm_90 (227 KiB, with the opt-in).
SHARED_LIMIT = 227 * 1024
TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.uint8: "u8",
         torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
         torch.bool: "i1"}


def _type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for a launch argument of type {type(value).__name__}")


def _compile_instead_of_launch(self, *args, grid, warmup, **kwargs):
    names = {p.name for p in self.params}
    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in names}  # num_warps, ...
    bound = self.signature.bind(*args, **kwargs)
    signature, constexprs = {}, {}
    for i, param in enumerate(self.params):
        value = bound.arguments[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[(i,)] = value
        else:
            signature[param.name] = _type(value)
    compiled = triton.compile(ASTSource(fn=self, signature=signature, constexprs=constexprs),
                              target=TARGET, options=options)
    shared = int(compiled.metadata.shared)
    ptx = compiled.asm["ptx"]
    # the matrix instructions it uses (wgmma / mma: tensor cores)
    mma = sorted({op for op in (line.split(maxsplit=1)[0] for line in ptx.splitlines() if line.strip())
                  if "mma" in op})
    print(json.dumps({"kernel": self.__name__, "shared": shared, "options": options, "mma": mma,
                      "constexprs": {p.name: bound.arguments[p.name] for p in self.params
                                     if p.is_constexpr}}), flush=True)
    if shared > SHARED_LIMIT:
        raise RuntimeError(f"{self.__name__} needs {shared} bytes of shared memory, > {SHARED_LIMIT}")


def main() -> None:
    from fcnfast import kernels

    JITFunction.run = _compile_instead_of_launch
    common.interpreted = lambda t: False  # the launchers' GPU tile sizes and dot modes
    g = torch.Generator().manual_seed(0)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g).to(dtype)

    frames = torch.randint(0, 256, (2, 37, 53, 3), dtype=torch.uint8, generator=g)
    mean = (104.0, 117.0, 123.0)
    for dtype, channels_last in ((torch.float16, False), (torch.bfloat16, True), (torch.float32, False)):
        kernels.preprocess(frames, mean=mean, scale=255.0, bgr=True, dtype=dtype,
                           channels_last=channels_last)
    labels = torch.randint(0, 21, (2, 37, 53), dtype=torch.uint8, generator=g)
    palette = torch.randint(0, 256, (21, 3), dtype=torch.uint8, generator=g)
    kernels.overlay(frames, labels, palette, 0.5, check_labels=False)

    bilinear = bilinear_weight(21, 21, 16)  # upscore8 (k 16, s 8)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        score = randn(2, 21, 9, 11, dtype=dtype)
        kernels.upsample_crop_argmax(score, bilinear.to(dtype), 8, (31, 31), (40, 50),
                                     return_scores=True)
        kernels.upsample_crop_argmax(score, randn(21, 21, 16, 16, dtype=dtype), 8, (31, 31),
                                     (40, 50))
        kernels.interp_argmax(score, (70, 85), return_scores=True)
        kernels.upsample_crop_add(score, bilinear.to(dtype), 8, offset=(31, 31), size=(40, 50))
        # upscore2 (k 4, s 2) + score_pool4, learned: skip scores, then pool4 features scored
        # by the fused 1×1 convolution
        learned = randn(21, 21, 4, 4, dtype=dtype)
        kernels.upsample_crop_add(score, learned, 2, randn(2, 21, 30, 30, dtype=dtype),
                                  skip_offset=(5, 5), size=(20, 24))
        kernels.upsample_crop_add(score, learned, 2, randn(2, 512, 30, 30, dtype=dtype),
                                  skip_offset=(5, 5), size=(20, 24),
                                  skip_weight=randn(21, 512, 1, 1, dtype=dtype),
                                  skip_bias=randn(21), skip_scale=0.01)
    kernels.interp_argmax(randn(1, 300, 5, 6, dtype=torch.float16), (17, 19))  # class blocks

    modules = [m for name, m in sys.modules.items() if name.startswith("fcnfast.kernels.")]
    every = sorted({name for module in modules for name, value in vars(module).items()
                    if isinstance(value, JITFunction) and name.endswith("_kernel")})
    print(json.dumps({"every_kernel": every}), flush=True)


if __name__ == "__main__":
    main()

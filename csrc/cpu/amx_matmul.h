// amx_matmul (cpu/amx_matmul.cpp): out = act(A·Wᵀ + bias (+ residual)) on the AMX tile unit,
// bfloat16 in and out, float32 sums: a stride-1 1×1 convolution over channels-last pixels (A: M
// pixels × K channels) with a ResNet block's residual add and ReLU fused, as one call from Python
// with no allocation and no kernel made per shape (oneDNN's convolution, called through torch,
// costs both: benchmarks/RESULTS.md).
//
// Unlike the per-level kernels (capability.h), this file is compiled once, with the AMX and
// AVX-512-BF16 flags (setup.py's AMX_FLAGS), its code in namespace fcn::cpu_amx, and reached only
// through the table amx_kernels() returns where this CPU and its OS run it.
#pragma once

#include <cstdint>
#include <string>

namespace fcn {

// K and N must be multiples of this (one tile row: 32 bfloat16 channels; two 16-column tiles).
constexpr int64_t kAmxBlock = 32;

// W (N, K) bfloat16 row-major → `packed` (N·K elements) in the order amx_matmul reads it.
using AmxPackWeightFn = void(uintptr_t w, int64_t n, int64_t k, uintptr_t packed);

// a: M rows of K bfloat16 (row stride lda elements); packed: amx_pack_weight's; bias: N float32
// or 0; residual: M rows of N bfloat16 (row stride ldr) or 0, and may be `out` itself; out: M
// rows of N bfloat16 (row stride ldo) = act(a·Wᵀ + bias + residual), ReLU when `relu`, each sum
// rounded once to bfloat16 (to nearest even). `batch` > 1 runs that many products in one call
// (a Winograd layer's tile points), the b-th over a + b·a_stride, packed + b·N·K and
// out + b·out_stride, with the same bias and no residual.
using AmxMatmulFn = void(uintptr_t a, int64_t m, int64_t k, int64_t lda, uintptr_t packed, int64_t n,
                         uintptr_t bias, uintptr_t residual, int64_t ldr, uintptr_t out, int64_t ldo,
                         bool relu, int64_t batch, int64_t a_stride, int64_t out_stride);

struct AmxKernels {
  AmxPackWeightFn* pack_weight;
  AmxMatmulFn* matmul;
};

// The AMX kernels, where this module has them and this CPU and OS run them (CPUID: AMX-TILE,
// AMX-BF16, AVX-512 F/BW/VL/BF16; XCR0's tile state; Linux's permission to use it, asked for
// once); else null, and `why` (if given) says why not. Built for the baseline (capability.cpp).
const AmxKernels* amx_kernels(std::string* why);

}  // namespace fcn

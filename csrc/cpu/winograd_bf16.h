// winograd_bf16 (cpu/winograd_bf16.cpp): a bfloat16 stride-1 3×3 convolution (dilation d, zero
// padding p) as Winograd F(2×2, 3×3) in one pass over the tiles. A thread takes a block of tiles,
// transforms them into a buffer that stays in its L2 cache, multiplies them by the filter's
// transform with AVX-512 BF16's pair dot products (float32 sums over all input channels) and
// applies the output transform to the sums as they come, without the tile buffers of the
// transform kernels (cpu/winograd.cpp) and the products' call between them: those buffers are
// several times the map and cross the shared cache twice each (benchmarks/RESULTS.md).
//
// Like the AMX kernels (amx_matmul.h) this file is compiled once, with the AVX-512-BF16 flags
// (setup.py's BF16_FLAGS), its code in its own namespace, and reached only through the table
// winograd_bf16_kernels() returns where this CPU and its OS run it.
#pragma once

#include <cstdint>
#include <string>

namespace fcn {

// K (output channels) must be a multiple of this (four registers of float32 sums); C even.
constexpr int64_t kWinogradBf16Cols = 64;

// U (16, C, K) bfloat16 (point, input channel, output channel: the filter's transform) → packed
// (16·C·K elements) in the order winograd_bf16_conv reads it.
using WinogradBf16PackFn = void(uintptr_t u, int64_t c, int64_t k, uintptr_t packed);

// x channels-last (N, H, W, C) bfloat16; packed: the pack of U; bias: K float32 or 0 → y
// channels-last (N, H + 2p − 2d, W + 2p − 2d, K) bfloat16, ReLU after the bias when `relu`.
using WinogradBf16ConvFn = void(uintptr_t x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t d,
                                int64_t p, uintptr_t packed, int64_t k, uintptr_t bias, bool relu,
                                uintptr_t y);

struct WinogradBf16Kernels {
  WinogradBf16PackFn* pack;
  WinogradBf16ConvFn* conv;
};

// The kernels, where this module has them and this CPU and OS run them (AVX-512 F/BW/VL/BF16, the
// level chosen not lowered by FCNFAST_CPU_CAPABILITY); else null, and `why` (if given) says why not.
const WinogradBf16Kernels* winograd_bf16_kernels(std::string* why);

}  // namespace fcn

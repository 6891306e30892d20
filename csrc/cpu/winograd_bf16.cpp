// winograd_bf16_conv (cpu/winograd_bf16.h). Compiled once by setup.py with BF16_FLAGS, in its
// own namespace (FCN_CPU_CAPABILITY = cpu_bf16); runs only after winograd_bf16_kernels() said
// this CPU can.
//
// A thread's block of tiles: their input transform, (rows, 16 points, C) in a buffer of at most
// kTileBudget bytes (half of a Zen 5 or Sapphire Rapids core's L2); then for every 64 output
// channels: for every point q, six tiles at a time, the products V[t, q]·U[q] as 24 float32
// registers (all C channels summed), stored as the block's (rows, 16 points, 64) float32 sums;
// then their output transform, bias and ReLU, rounded once to bfloat16 into the output.
#include "cpu/winograd_bf16.h"

// GCC 12 warns of its own AVX-512 intrinsics' placeholder operands (_mm512_undefined_*) at -O3.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu/winograd_tiles.h"

#if !defined(__AVX512BF16__) || !defined(FCN_CPU_CAPABILITY)
#error "cpu/winograd_bf16.cpp is compiled by setup.py with BF16_FLAGS and its own FCN_CPU_CAPABILITY"
#endif

FCN_NAMESPACE_BEGIN
namespace cpu {
namespace {

constexpr int kPoints = 16;                       // F(2×2, 3×3)'s 4×4 tile points
constexpr int kRows = 6;                          // tiles of one product step
constexpr int kRegs = kWinogradBf16Cols / 16;     // registers of output channels of one step
constexpr int64_t kOutputs = 4;                   // outputs of a tile
constexpr int64_t kTileBudget = 512 << 10;        // bytes of a thread's transformed tiles
constexpr int64_t kMaxBlock = 40 * kRows;         // tiles of a block, at most

// A thread's buffer `which` (0: tiles, 1: sums) of at least `bytes`, kept between calls; null
// when there is no memory for it (inside a parallel region: nothing may throw there).
void* thread_buffer(int which, int64_t bytes) {
  static thread_local void* buffer[2] = {nullptr, nullptr};
  static thread_local int64_t capacity[2] = {0, 0};
  if (bytes > capacity[which]) {
    std::free(buffer[which]);
    buffer[which] = std::aligned_alloc(64, (static_cast<size_t>(bytes) + 63) / 64 * 64);
    capacity[which] = buffer[which] ? bytes : 0;
  }
  return buffer[which];
}

void pack(uintptr_t u_, int64_t c, int64_t k, uintptr_t packed_) {
  const uint16_t* u = reinterpret_cast<const uint16_t*>(u_);
  uint16_t* packed = reinterpret_cast<uint16_t*>(packed_);
  const int64_t blocks = k / kWinogradBf16Cols, pairs = c / 2;
  // packed[q][block][i][j][s] = U[q][2i + s][64·block + j]: per channel pair, the 64 output
  // channels' two weights side by side, as a pair dot product takes them.
  for (int64_t q = 0; q < kPoints; ++q)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t i = 0; i < pairs; ++i)
        for (int64_t j = 0; j < kWinogradBf16Cols; ++j)
          for (int64_t s = 0; s < 2; ++s)
            packed[(((q * blocks + b) * pairs + i) * kWinogradBf16Cols + j) * 2 + s] =
                u[(q * c + 2 * i + s) * k + b * kWinogradBf16Cols + j];
}

// acc[r][j] = Σ over the channel pairs i of rows r < R of V (row r at v + r·v_stride) times the
// packed block w's 64 columns, in float32.
template <int R>
inline void products(const uint16_t* v, int64_t v_stride, const uint16_t* w, int64_t pairs,
                     __m512 (&acc)[kRows][kRegs]) {
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kRegs; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < pairs; ++i) {
    __m512bh b[kRegs];
    for (int j = 0; j < kRegs; ++j)
      b[j] = (__m512bh)_mm512_loadu_si512(w + (i * kWinogradBf16Cols + 16 * j) * 2);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, v + r * v_stride + 2 * i, sizeof pair);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      for (int j = 0; j < kRegs; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], a, b[j]);
    }
  }
}

// Point q's products of the R tiles (rows of V at v + r·16·C) into sums + (r·16 + q)·64.
template <int R>
inline void step(const uint16_t* v, const uint16_t* w, int64_t c, int q, float* sums) {
  __m512 acc[kRows][kRegs];
  products<R>(v, kPoints * c, w, c / 2, acc);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kRegs; ++j)
      _mm512_store_ps(sums + (r * kPoints + q) * kWinogradBf16Cols + 16 * j, acc[r][j]);
}

struct Layer {
  const bf16_t* x;
  const uint16_t* packed;
  const float* bias;
  bf16_t* y;
  int64_t c, k, block;  // block: tiles of a thread's block, at most
  bool relu;
};

// Tiles [t0, t1) of the layer, on this thread; false when its buffers could not be had.
bool run_block(const Layer& l, const Tiling& g, int64_t t0, int64_t t1) {
  const int64_t nt = t1 - t0, c = l.c, blocks = l.k / kWinogradBf16Cols;
  bf16_t* tiles = static_cast<bf16_t*>(thread_buffer(0, l.block * kPoints * c * 2));
  float* sums = static_cast<float*>(thread_buffer(1, l.block * kPoints * kWinogradBf16Cols * 4));
  if (!tiles || !sums) return false;
  for (int64_t t = t0; t < t1; ++t) {
    const bf16_t* src[kPoints];
    tile_inputs<bf16_t, 2>(g, l.x, c, t, src);
    input_channels<bf16_t, 2>(src, 0, c, tiles + (t - t0) * kPoints * c, c);
  }
  const uint16_t* v = reinterpret_cast<const uint16_t*>(tiles);
  for (int64_t kb = 0; kb < blocks; ++kb) {
    for (int q = 0; q < kPoints; ++q) {
      const uint16_t* w = l.packed + (q * blocks + kb) * c * kWinogradBf16Cols;
      for (int64_t r0 = 0; r0 < nt; r0 += kRows) {
        const uint16_t* vr = v + (r0 * kPoints + q) * c;
        float* s = sums + r0 * kPoints * kWinogradBf16Cols;
        switch (std::min<int64_t>(kRows, nt - r0)) {
          case 6: step<6>(vr, w, c, q, s); break;
          case 5: step<5>(vr, w, c, q, s); break;
          case 4: step<4>(vr, w, c, q, s); break;
          case 3: step<3>(vr, w, c, q, s); break;
          case 2: step<2>(vr, w, c, q, s); break;
          default: step<1>(vr, w, c, q, s); break;
        }
      }
    }
    const int64_t k0 = kb * kWinogradBf16Cols;
    for (int64_t t = t0; t < t1; ++t) {
      bf16_t* dst[kOutputs];
      tile_outputs<bf16_t, 2>(g, l.y, l.k, t, dst);
      const float* m = sums + (t - t0) * kPoints * kWinogradBf16Cols;
      for (int j = 0; j < kRegs; ++j)
        output_lanes<float, bf16_t, 2, true>(m + 16 * j, kWinogradBf16Cols,
                                             l.bias ? l.bias + k0 + 16 * j : nullptr, l.relu, dst,
                                             k0 + 16 * j, 16);
    }
  }
  return true;
}

void conv(uintptr_t x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t d, int64_t p,
          uintptr_t packed, int64_t k, uintptr_t bias, bool relu, uintptr_t y) {
  const Tiling g = tiling(n, h, w, d, p, 2);
  const int64_t tiles = g.tiles();
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), tiles));
  // An equal share of the tiles for every thread, in blocks of as many as fit the budget: the
  // threads finish together.
  const int64_t share = (tiles + threads - 1) / threads;
  const int64_t fit = kTileBudget / (kPoints * c * 2) / kRows * kRows;
  const int64_t most = std::min(kMaxBlock, std::max<int64_t>(kRows, fit));
  const int64_t per_thread = (share + most - 1) / most, block = (share + per_thread - 1) / per_thread;
  const Layer l{reinterpret_cast<const bf16_t*>(x), reinterpret_cast<const uint16_t*>(packed),
                reinterpret_cast<const float*>(bias), reinterpret_cast<bf16_t*>(y), c, k, block, relu};
  int failed = 0;
#pragma omp parallel for schedule(static, 1) num_threads(threads) reduction(| : failed)
  for (int64_t i = 0; i < threads; ++i) {
    const int64_t first = i * tiles / threads, last = (i + 1) * tiles / threads;
    for (int64_t t0 = first; t0 < last && !failed; t0 += block)
      failed |= !run_block(l, g, t0, std::min(last, t0 + block));
  }
  if (failed) throw std::bad_alloc();
}

}  // namespace
}  // namespace cpu
FCN_NAMESPACE_END

namespace fcn {
extern const WinogradBf16Kernels kernels_winograd_bf16;
const WinogradBf16Kernels kernels_winograd_bf16 = {&FCN_CPU_CAPABILITY::cpu::pack,
                                                   &FCN_CPU_CAPABILITY::cpu::conv};
}  // namespace fcn

// Winograd F(m×m, 3×3) input and output transforms (m = 2 or 4) of a stride-1 3×3 convolution
// with dilation d and zero padding p, channels-last (csrc/winograd.h has the arithmetic).
//
// Tiles: a dilation-d convolution is d×d independent undilated ones, one per phase (pa, pb) of
// the output's rows and columns. Tile (n, I, pa, J, pb) computes the outputs at rows
// m·d·I + pa + d·u and columns m·d·J + pb + d·v (u, v ∈ 0..m−1) from the inputs at rows
// m·d·I + pa + d·a − p and columns m·d·J + pb + d·b − p (a, b ∈ 0..m+1), zero outside the image.
// Each phase gets just the tiles its own outputs need (phase pa of out_h rows has
// ⌈(out_h − pa) / d⌉ of them, so ⌈that / m⌉ tiles), in the order (I, pa) along the rows and
// (J, pb) along the columns, those pairs that exist: tile t = (n·TR + r)·TC + c for the r-th row
// origin and the c-th column origin (TR, TC of them).
// V and M hold tile t's point q (channels contiguous; (m+2)² points) at row_stride·t +
// point_stride·q: (points, rows, C) for a batched GEMM, (rows, points, C) for a grouped 1×1
// convolution's channels-last input and output; a buffer may have more rows than there are tiles
// (the rows past them are neither written nor read).
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "cpu/winograd_tiles.h"
#include "dispatch.h"

FCN_NAMESPACE_BEGIN
namespace cpu {
namespace {

// Channels of a tile staged per point before they go out to the (P, rows, C) layout's planes.
constexpr int kStage = 64;

template <typename T, int M>
void input_kernel(const T* x, T* v, int64_t row_stride, int64_t point_stride, int64_t c,
                  const Tiling& g) {
  constexpr int N = Winograd<M>::kIn, P = N * N;
  const int64_t tiles = g.tiles();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    const T* src[P];
    tile_inputs<T, M>(g, x, c, t, src);
    T* dst = v + t * row_stride;
    if (point_stride == c) {  // (rows, P, C): the tile's values are one contiguous run
      input_channels<T, M>(src, 0, c, dst, point_stride);
      continue;
    }
    // (P, rows, C): P planes far apart, each written whole lines at a time from a staged block
    alignas(64) T stage[P * kStage];
    for (int64_t b0 = 0; b0 < c; b0 += kStage) {
      const int64_t nb = std::min<int64_t>(kStage, c - b0);
      input_channels<T, M>(src, b0, nb, stage, kStage);
      for (int q = 0; q < P; ++q) std::memcpy(dst + q * point_stride + b0, stage + q * kStage, sizeof(T) * nb);
    }
  }
}

template <typename T, int M>
void output_kernel(const T* m, int64_t row_stride, int64_t point_stride, const float* bias,
                   bool relu, T* y, int64_t k, const Tiling& g) {
  const int64_t tiles = g.tiles(), full = k - k % kRegLanes;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    T* dst[M * M];
    tile_outputs<T, M>(g, y, k, t, dst);
    const T* src = m + t * row_stride;
    for (int64_t c0 = 0; c0 < full; c0 += kRegLanes)
      output_lanes<T, T, M, true>(src + c0, point_stride, bias ? bias + c0 : nullptr, relu, dst, c0, kRegLanes);
    if (full < k)
      output_lanes<T, T, M, false>(src + full, point_stride, bias ? bias + full : nullptr, relu, dst, full,
                                   static_cast<int>(k - full));
  }
}

// Runs the statements with `M` bound to the tile's output size `m` (2 or 4).
#define FCN_DISPATCH_TILE(m, M, ...)                                                   \
  switch (m) {                                                                         \
    case 2: { constexpr int M = 2; __VA_ARGS__; } break;                               \
    case 4: { constexpr int M = 4; __VA_ARGS__; } break;                               \
    default: throw std::invalid_argument("Winograd tile must be 2 or 4, got " + std::to_string(m)); \
  }

}  // namespace

void winograd_input(uintptr_t x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t d, int64_t p,
                    int64_t m, uintptr_t v, int64_t row_stride, int64_t point_stride, int dtype) {
  const Tiling g = tiling(n, h, w, d, p, m);
  FCN_DISPATCH_TILE(m, M, FCN_DISPATCH_FLOAT(dtype, T,
      input_kernel<T, M>(reinterpret_cast<const T*>(x), reinterpret_cast<T*>(v), row_stride,
                         point_stride, c, g)));
}

void winograd_output(uintptr_t products, int64_t row_stride, int64_t point_stride, uintptr_t bias,
                     bool relu, int64_t n, int64_t h, int64_t w, int64_t k, int64_t d, int64_t p,
                     int64_t m, uintptr_t y, int dtype) {
  const Tiling g = tiling(n, h, w, d, p, m);
  FCN_DISPATCH_TILE(m, M, FCN_DISPATCH_FLOAT(dtype, T,
      output_kernel<T, M>(reinterpret_cast<const T*>(products), row_stride, point_stride,
                          reinterpret_cast<const float*>(bias), relu, reinterpret_cast<T*>(y), k, g)));
}

}  // namespace cpu
FCN_NAMESPACE_END

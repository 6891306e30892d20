// The tiling of cpu/winograd.cpp's Winograd transforms (its header comment describes it), a tile's
// input and output pixels, and its input and output transforms in vector registers: shared by the
// transform kernels and the one-pass bfloat16 layer (cpu/winograd_bf16.cpp). Included into each
// level's namespace (fcn_math.h).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/simd.h"
#include "winograd.h"

FCN_NAMESPACE_BEGIN
namespace cpu {

// The tile origins m·d·I + pa along one axis of ``out`` outputs, in the order (I, pa).
inline std::vector<int64_t> tile_origins(int64_t out, int64_t d, int64_t m) {
  std::vector<int64_t> origins;
  for (int64_t i = 0; m * d * i < out; ++i)
    for (int64_t pa = 0; pa < d && m * d * i + pa < out; ++pa) origins.push_back(m * d * i + pa);
  return origins;
}

struct Tiling {
  int64_t n, h, w, d, p, out_h, out_w;
  std::vector<int64_t> rows, cols;  // the tiles' first output row / column
  int64_t tiles() const { return n * static_cast<int64_t>(rows.size() * cols.size()); }
  // The tile's image and first output row and column (the input's are d·a − p further).
  void origin(int64_t t, int64_t& img, int64_t& y0, int64_t& x0) const {
    const int64_t tc = static_cast<int64_t>(cols.size()), tr = static_cast<int64_t>(rows.size());
    x0 = cols[t % tc];
    y0 = rows[(t / tc) % tr];
    img = t / (tc * tr);
  }
};

inline Tiling tiling(int64_t n, int64_t h, int64_t w, int64_t d, int64_t p, int64_t m) {
  const int64_t out_h = h + 2 * p - 2 * d, out_w = w + 2 * p - 2 * d;
  return {n, h, w, d, p, out_h, out_w, tile_origins(out_h, d, m), tile_origins(out_w, d, m)};
}

// One tile's channels [c0, c0 + n) (kFull: n = kRegLanes, a whole register), in registers: src[q]
// is point q's input pixel (its channel 0), null outside the image; point q goes to
// dst + q·point_stride.
template <typename T, int M, bool kFull>
inline void input_lanes(const T* const* src, int64_t c0, T* dst, int64_t point_stride, int n) {
  constexpr int N = Winograd<M>::kIn, P = N * N;
  vreg cols[P];  // loaded column by column: F(4×4)'s 36 points would not fit the registers twice
  for (int b = 0; b < N; ++b) {  // Bᵀ down each column b: cols[N·i + b]
    vreg d[N], r[N];
    for (int a = 0; a < N; ++a) {
      const T* s = src[N * a + b];
      d[a] = !s ? vreg{} : kFull ? load_lanes(s + c0) : load_lanes(s + c0, n);
    }
    Winograd<M>::input_1d(d, r);
    for (int q = 0; q < N; ++q) cols[N * q + b] = r[q];
  }
  for (int a = 0; a < N; ++a) {  // then along each row: V[N·a + j]
    vreg d[N], r[N];
    for (int b = 0; b < N; ++b) d[b] = cols[N * a + b];
    Winograd<M>::input_1d(d, r);
    for (int j = 0; j < N; ++j) {
      T* out = dst + (N * a + j) * point_stride;
      if (kFull)
        store_lanes(out, r[j]);
      else
        store_lanes(out, r[j], n);
    }
  }
}

// Channels [c0, c0 + n) of one tile, whole registers then the tail; channel c0 + i of point q goes
// to dst + q·point_stride + i.
template <typename T, int M>
inline void input_channels(const T* const* src, int64_t c0, int64_t n, T* dst, int64_t point_stride) {
  const int64_t whole = n - n % kRegLanes;
  for (int64_t i = 0; i < whole; i += kRegLanes)
    input_lanes<T, M, true>(src, c0 + i, dst + i, point_stride, kRegLanes);
  if (whole < n) input_lanes<T, M, false>(src, c0 + whole, dst + whole, point_stride, static_cast<int>(n - whole));
}

// One tile's output channels [c0, c0 + n) (kFull: n = kRegLanes, a whole register): src + q·point_stride
// holds point q's products of those channels, bias (or null) their biases; dst[M·u + v] is output
// (u, v)'s pixel (its channel 0), null past the output's edge.
template <typename S, typename T, int M, bool kFull>
inline void output_lanes(const S* src, int64_t point_stride, const float* bias, bool relu,
                         T* const* dst, int64_t c0, int n) {
  constexpr int N = Winograd<M>::kIn;
  vreg cols[M * N];
  for (int j = 0; j < N; ++j) {  // Aᵀ down each column j: cols[N·u + j]
    vreg d[N], r[M];
    for (int a = 0; a < N; ++a) {
      const S* s = src + (N * a + j) * point_stride;
      d[a] = kFull ? load_lanes(s) : load_lanes(s, n);
    }
    Winograd<M>::output_1d(d, r);
    for (int u = 0; u < M; ++u) cols[N * u + j] = r[u];
  }
  const vreg b = !bias ? vreg{} : kFull ? load_lanes(bias) : load_lanes(bias, n);
  for (int u = 0; u < M; ++u) {
    vreg d[N], r[M];
    for (int i = 0; i < N; ++i) d[i] = cols[N * u + i];
    Winograd<M>::output_1d(d, r);
    for (int v = 0; v < M; ++v) {
      T* o = dst[M * u + v];
      if (!o) continue;
      vreg val = r[v] + b;
      if (relu) val = val > 0.0f ? val : vreg{};  // NaN → 0, as the scalar ReLU does
      if (kFull)
        store_lanes(o + c0, val);
      else
        store_lanes(o + c0, val, n);
    }
  }
}

// Tile t's input pixels: src[N·a + b] is input (a, b)'s channel 0, null outside the image.
template <typename T, int M>
inline void tile_inputs(const Tiling& g, const T* x, int64_t c, int64_t t, const T** src) {
  constexpr int N = Winograd<M>::kIn;
  int64_t img, y0, x0;
  g.origin(t, img, y0, x0);
  for (int a = 0; a < N; ++a) {
    const int64_t y = y0 + g.d * a - g.p;
    for (int b = 0; b < N; ++b) {
      const int64_t xx = x0 + g.d * b - g.p;
      const bool inside = y >= 0 && y < g.h && xx >= 0 && xx < g.w;
      src[N * a + b] = inside ? x + ((img * g.h + y) * g.w + xx) * c : nullptr;
    }
  }
}

// Tile t's output pixels: dst[M·u + v] is output (u, v)'s channel 0, null past the output's edge.
template <typename T, int M>
inline void tile_outputs(const Tiling& g, T* y, int64_t k, int64_t t, T** dst) {
  int64_t img, y0, x0;
  g.origin(t, img, y0, x0);
  for (int u = 0; u < M; ++u)
    for (int v = 0; v < M; ++v) {
      const int64_t yy = y0 + g.d * u, xx = x0 + g.d * v;
      dst[M * u + v] = (yy < g.out_h && xx < g.out_w) ? y + ((img * g.out_h + yy) * g.out_w + xx) * k
                                                      : nullptr;
    }
}

}  // namespace cpu
FCN_NAMESPACE_END

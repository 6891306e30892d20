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
#include "cpu/simd.h"
#include "dispatch.h"
#include "winograd.h"

FCN_NAMESPACE_BEGIN
namespace cpu {
namespace {

// Channels of a tile staged per point before they go out to the (P, rows, C) layout's planes.
constexpr int kStage = 64;

// The tile origins m·d·I + pa along one axis of ``out`` outputs, in the order (I, pa).
std::vector<int64_t> tile_origins(int64_t out, int64_t d, int64_t m) {
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

Tiling tiling(int64_t n, int64_t h, int64_t w, int64_t d, int64_t p, int64_t m) {
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

template <typename T, int M>
void input_kernel(const T* x, T* v, int64_t row_stride, int64_t point_stride, int64_t c,
                  const Tiling& g) {
  constexpr int N = Winograd<M>::kIn, P = N * N;
  const int64_t tiles = g.tiles();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t img, y0, x0;
    g.origin(t, img, y0, x0);
    const T* src[P];
    for (int a = 0; a < N; ++a) {
      const int64_t y = y0 + g.d * a - g.p;
      for (int b = 0; b < N; ++b) {
        const int64_t xx = x0 + g.d * b - g.p;
        const bool inside = y >= 0 && y < g.h && xx >= 0 && xx < g.w;
        src[N * a + b] = inside ? x + ((img * g.h + y) * g.w + xx) * c : nullptr;
      }
    }
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

// One tile's output channels [c0, c0 + n) (kFull as above): dst[M·u + v] is output (u, v)'s pixel
// (its channel 0), null past the output's edge.
template <typename T, int M, bool kFull>
inline void output_lanes(const T* src, int64_t point_stride, const float* bias, bool relu,
                         T* const* dst, int64_t c0, int n) {
  constexpr int N = Winograd<M>::kIn;
  vreg cols[M * N];
  for (int j = 0; j < N; ++j) {  // Aᵀ down each column j: cols[N·u + j]
    vreg d[N], r[M];
    for (int a = 0; a < N; ++a) {
      const T* s = src + (N * a + j) * point_stride + c0;
      d[a] = kFull ? load_lanes(s) : load_lanes(s, n);
    }
    Winograd<M>::output_1d(d, r);
    for (int u = 0; u < M; ++u) cols[N * u + j] = r[u];
  }
  const vreg b = !bias ? vreg{} : kFull ? load_lanes(bias + c0) : load_lanes(bias + c0, n);
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

template <typename T, int M>
void output_kernel(const T* m, int64_t row_stride, int64_t point_stride, const float* bias,
                   bool relu, T* y, int64_t k, const Tiling& g) {
  const int64_t tiles = g.tiles(), full = k - k % kRegLanes;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t img, y0, x0;
    g.origin(t, img, y0, x0);
    T* dst[M * M];
    for (int u = 0; u < M; ++u)
      for (int v = 0; v < M; ++v) {
        const int64_t yy = y0 + g.d * u, xx = x0 + g.d * v;
        dst[M * u + v] = (yy < g.out_h && xx < g.out_w) ? y + ((img * g.out_h + yy) * g.out_w + xx) * k
                                                        : nullptr;
      }
    const T* src = m + t * row_stride;
    for (int64_t c0 = 0; c0 < full; c0 += kRegLanes)
      output_lanes<T, M, true>(src, point_stride, bias, relu, dst, c0, kRegLanes);
    if (full < k) output_lanes<T, M, false>(src, point_stride, bias, relu, dst, full, static_cast<int>(k - full));
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

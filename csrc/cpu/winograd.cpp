// Winograd F(2×2, 3×3) input and output transforms of a stride-1 3×3 convolution with dilation
// d and zero padding p, channels-last (csrc/winograd.h has the arithmetic).
//
// Tiles: a dilation-d convolution is d×d independent undilated ones, one per phase (pa, pb) of
// the output's rows and columns. Tile (n, I, pa, J, pb) computes the outputs at rows
// 2d·I + pa + d·u and columns 2d·J + pb + d·v (u, v ∈ {0, 1}) from the inputs at rows
// 2d·I + pa + d·a − p and columns 2d·J + pb + d·b − p (a, b ∈ 0..3), zero outside the image.
// Each phase gets just the tiles its own outputs need (phase pa of out_h rows has
// ⌈(out_h − pa) / d⌉ of them, so ⌈that / 2⌉ tiles), in the order (I, pa) along the rows and
// (J, pb) along the columns, those pairs that exist: tile t = (n·TR + r)·TC + c for the r-th row
// origin and the c-th column origin (TR, TC of them).
// V and M hold tile t's point q (channels contiguous) at row_stride·t + point_stride·q: (16, rows,
// C) for a batched GEMM, (rows, 16, C) for a 16-group 1×1 convolution's channels-last input and
// output; a buffer may have more rows than there are tiles (the rows past them are neither
// written nor read).
#include <algorithm>
#include <vector>

#include "cpu/ops.h"
#include "dispatch.h"
#include "winograd.h"

FCN_NAMESPACE_BEGIN
namespace cpu {
namespace {

constexpr int kBlock = 64;  // channels per pass through the float buffers

// The tile origins 2d·I + pa along one axis of ``out`` outputs, in the order (I, pa).
std::vector<int64_t> tile_origins(int64_t out, int64_t d) {
  std::vector<int64_t> origins;
  for (int64_t i = 0; 2 * d * i < out; ++i)
    for (int64_t pa = 0; pa < d && 2 * d * i + pa < out; ++pa) origins.push_back(2 * d * i + pa);
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

Tiling tiling(int64_t n, int64_t h, int64_t w, int64_t d, int64_t p) {
  const int64_t out_h = h + 2 * p - 2 * d, out_w = w + 2 * p - 2 * d;
  return {n, h, w, d, p, out_h, out_w, tile_origins(out_h, d), tile_origins(out_w, d)};
}

template <typename T>
void input_kernel(const T* x, T* v, int64_t row_stride, int64_t point_stride, int64_t c,
                  const Tiling& g) {
  const int64_t tiles = g.tiles();
  const std::vector<T> zeros(c, from_float<T>(0.0f));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t img, y0, x0;
    g.origin(t, img, y0, x0);
    const T* src[16];
    for (int a = 0; a < 4; ++a) {
      const int64_t y = y0 + g.d * a - g.p;
      for (int b = 0; b < 4; ++b) {
        const int64_t xx = x0 + g.d * b - g.p;
        const bool inside = y >= 0 && y < g.h && xx >= 0 && xx < g.w;
        src[4 * a + b] = inside ? x + ((img * g.h + y) * g.w + xx) * c : zeros.data();
      }
    }
    T* dst = v + t * row_stride;
    // A block of channels at a time, through float buffers, so the loops over channels vectorize.
    for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
      const int nb = static_cast<int>(std::min<int64_t>(kBlock, c - c0));
      float in[16][kBlock], cols[16][kBlock];
      for (int q = 0; q < 16; ++q)
        for (int i = 0; i < nb; ++i) in[q][i] = to_float(src[q][c0 + i]);
      for (int b = 0; b < 4; ++b)  // Bᵀ down each column b: cols[4i + b]
        for (int i = 0; i < nb; ++i) {
          float r[4];
          winograd_input_1d(in[b][i], in[4 + b][i], in[8 + b][i], in[12 + b][i], r);
          for (int q = 0; q < 4; ++q) cols[4 * q + b][i] = r[q];
        }
      for (int a = 0; a < 4; ++a)  // then along each row: V[4a + j]
        for (int i = 0; i < nb; ++i) {
          float r[4];
          winograd_input_1d(cols[4 * a][i], cols[4 * a + 1][i], cols[4 * a + 2][i], cols[4 * a + 3][i], r);
          for (int j = 0; j < 4; ++j) in[4 * a + j][i] = r[j];
        }
      for (int q = 0; q < 16; ++q) {
        T* out = dst + q * point_stride + c0;
        for (int i = 0; i < nb; ++i) out[i] = from_float<T>(in[q][i]);
      }
    }
  }
}

template <typename T>
void output_kernel(const T* m, int64_t row_stride, int64_t point_stride, const float* bias,
                   bool relu, T* y, int64_t k, const Tiling& g) {
  const int64_t tiles = g.tiles();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t img, y0, x0;
    g.origin(t, img, y0, x0);
    T* dst[4];
    for (int u = 0; u < 2; ++u)
      for (int v = 0; v < 2; ++v) {
        const int64_t yy = y0 + g.d * u, xx = x0 + g.d * v;
        dst[2 * u + v] = (yy < g.out_h && xx < g.out_w) ? y + ((img * g.out_h + yy) * g.out_w + xx) * k
                                                        : nullptr;
      }
    const T* src = m + t * row_stride;
    for (int64_t c0 = 0; c0 < k; c0 += kBlock) {
      const int nb = static_cast<int>(std::min<int64_t>(kBlock, k - c0));
      float in[16][kBlock], cols[8][kBlock];
      for (int q = 0; q < 16; ++q)
        for (int i = 0; i < nb; ++i) in[q][i] = to_float(src[q * point_stride + c0 + i]);
      for (int j = 0; j < 4; ++j)  // Aᵀ down each column j: cols[4u + j]
        for (int i = 0; i < nb; ++i) {
          float r[2];
          winograd_output_1d(in[j][i], in[4 + j][i], in[8 + j][i], in[12 + j][i], r);
          cols[j][i] = r[0];
          cols[4 + j][i] = r[1];
        }
      for (int u = 0; u < 2; ++u) {
        float out[2][kBlock];
        for (int i = 0; i < nb; ++i) {
          float r[2];
          winograd_output_1d(cols[4 * u][i], cols[4 * u + 1][i], cols[4 * u + 2][i], cols[4 * u + 3][i], r);
          const float b = bias ? bias[c0 + i] : 0.0f;
          for (int v = 0; v < 2; ++v) {
            const float val = r[v] + b;
            out[v][i] = relu ? (val > 0.0f ? val : 0.0f) : val;
          }
        }
        for (int v = 0; v < 2; ++v) {
          T* o = dst[2 * u + v];
          if (!o) continue;
          for (int i = 0; i < nb; ++i) o[c0 + i] = from_float<T>(out[v][i]);
        }
      }
    }
  }
}

}  // namespace

void winograd_input(uintptr_t x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t d, int64_t p,
                    uintptr_t v, int64_t row_stride, int64_t point_stride, int dtype) {
  const Tiling g = tiling(n, h, w, d, p);
  FCN_DISPATCH_FLOAT(dtype, T,
      input_kernel<T>(reinterpret_cast<const T*>(x), reinterpret_cast<T*>(v), row_stride,
                      point_stride, c, g));
}

void winograd_output(uintptr_t m, int64_t row_stride, int64_t point_stride, uintptr_t bias,
                     bool relu, int64_t n, int64_t h, int64_t w, int64_t k, int64_t d, int64_t p,
                     uintptr_t y, int dtype) {
  const Tiling g = tiling(n, h, w, d, p);
  FCN_DISPATCH_FLOAT(dtype, T,
      output_kernel<T>(reinterpret_cast<const T*>(m), row_stride, point_stride,
                       reinterpret_cast<const float*>(bias), relu, reinterpret_cast<T*>(y), k, g));
}

}  // namespace cpu
FCN_NAMESPACE_END

// Winograd F(m×m, 3×3) transforms of a 3×3 convolution (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016), m = 2 or 4: an n×n input tile d (n = m + 2) and a 3×3
// filter g become n² values each, V = Bᵀ d B and U = G g Gᵀ; the n² products Σ_c U·V (one matrix
// product per tile point, done by the caller's GEMM) give the m×m output tile Aᵀ M A. The
// transforms are separable: each applies a 1-D transform to the columns, then to the rows. F is
// float, or a CPU kernel's vector of floats (csrc/cpu/simd.h): the same steps, lane by lane.
// Shared by every implementation of the transforms (the CPU kernels in cpu/winograd.cpp; the
// filter's G lives in fcnfast/engine/winograd.py, done once per layer, from the same points).
#pragma once

#include "fcn_math.h"

FCN_NAMESPACE_BEGIN

template <int M> struct Winograd;

// F(2, 3), points 0, 1, −1, ∞.
template <> struct Winograd<2> {
  static constexpr int kIn = 4;
  // Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
  template <typename F> FCN_HD static void input_1d(const F* d, F* r) {
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }
  // Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]
  template <typename F> FCN_HD static void output_1d(const F* m, F* y) {
    y[0] = (m[0] + m[1]) + m[2];
    y[1] = (m[1] - m[2]) - m[3];
  }
};

// F(4, 3), points 0, 1, −1, 1/2, −2, ∞: a third of the rounding error of Lavin's 0, ±1, ±2 in
// float32 (benchmarks/RESULTS.md); too much for bfloat16 V, which keeps F(2, 3).
template <> struct Winograd<4> {
  static constexpr int kIn = 6;
  // Bᵀ = [[1, -3/2, -2, 3/2, 1, 0], [0, -1, 1/2, 5/2, 1, 0], [0, 1, -5/2, 1/2, 1, 0],
  //       [0, -2, -1, 2, 1, 0], [0, 1/2, -1, -1/2, 1, 0], [0, 1, -3/2, -2, 3/2, 1]]
  template <typename F> FCN_HD static void input_1d(const F* d, F* r) {
    r[0] = ((d[0] - 1.5f * d[1]) - 2.0f * d[2]) + (1.5f * d[3] + d[4]);
    r[1] = (0.5f * d[2] - d[1]) + (2.5f * d[3] + d[4]);
    r[2] = (d[1] - 2.5f * d[2]) + (0.5f * d[3] + d[4]);
    r[3] = (-2.0f * d[1] - d[2]) + (2.0f * d[3] + d[4]);
    r[4] = (0.5f * d[1] - d[2]) + (d[4] - 0.5f * d[3]);
    r[5] = ((d[1] - 1.5f * d[2]) - 2.0f * d[3]) + (1.5f * d[4] + d[5]);
  }
  // Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 1/2, -2, 0], [0, 1, 1, 1/4, 4, 0], [0, 1, -1, 1/8, -8, 1]]
  template <typename F> FCN_HD static void output_1d(const F* m, F* y) {
    const F s = m[1] + m[2], t = m[1] - m[2];
    y[0] = ((m[0] + s) + m[3]) + m[4];
    y[1] = (t + 0.5f * m[3]) - 2.0f * m[4];
    y[2] = (s + 0.25f * m[3]) + 4.0f * m[4];
    y[3] = ((t + 0.125f * m[3]) - 8.0f * m[4]) + m[5];
  }
};

FCN_NAMESPACE_END

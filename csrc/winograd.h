// Winograd F(2×2, 3×3) transforms of a 3×3 convolution (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016): a 4×4 input tile d and a 3×3 filter g become 16 values
// each, V = Bᵀ d B and U = G g Gᵀ; the 16 products Σ_c U·V (one matrix product per tile point,
// done by the caller's GEMM) give the 2×2 output tile Aᵀ M A. The transforms are separable: each
// applies a 1-D transform to the rows, then to the columns. Shared by every implementation of the
// transforms (the CPU kernels in cpu/winograd.cpp; the filter's G lives in
// fcnfast/engine/winograd.py, done once per layer).
#pragma once

#include "fcn_math.h"

FCN_NAMESPACE_BEGIN

// Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] applied to (d0, d1, d2, d3).
FCN_HD void winograd_input_1d(float d0, float d1, float d2, float d3, float* r) {
  r[0] = d0 - d2;
  r[1] = d1 + d2;
  r[2] = d2 - d1;
  r[3] = d1 - d3;
}

// Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]] applied to (m0, m1, m2, m3).
FCN_HD void winograd_output_1d(float m0, float m1, float m2, float m3, float* y) {
  y[0] = (m0 + m1) + m2;
  y[1] = (m1 - m2) - m3;
}

FCN_NAMESPACE_END

// What both CPU argmax kernels (upsample_crop_argmax.cpp, interp_argmax.cpp) share: their work
// items, and the inner loop that blends two rows of one class and folds the result into the running
// (best, index) arrays of a strip of output pixels. Their vector types are cpu/simd.h's.
#pragma once

#include <cstdint>

#include "cpu/simd.h"
#include "fcn_math.h"

FCN_NAMESPACE_BEGIN
namespace cpu {

// Output rows [y0, y1) of image n.
struct RowRange {
  int64_t n;
  int y0, y1;
};

// kFinite: both rows are finite, so with weights in [0, 1] a blend may overflow to inf but is never
// NaN, and the NaN-free update applies (it vectorises). Stores are unconditional: no branches.
template <bool kFinite>
inline void blend_argmax_strip(const float* __restrict__ a, const float* __restrict__ b, float w0,
                               float w1, int c, int n, float* __restrict__ best,
                               int* __restrict__ idx) {
  for (int i = 0; i < n; ++i) {
    const float v = blend2(w0, a[i], w1, b[i]);
    float bv = best[i];
    int bi = idx[i];
    if (kFinite)
      argmax_update_number(v, c, bv, bi);
    else
      argmax_update(v, c, bv, bi);
    best[i] = bv;
    idx[i] = bi;
  }
}

}  // namespace cpu
FCN_NAMESPACE_END

// The inner loop both CPU argmax kernels share: blend two rows of one class and fold the result
// into the running (best, index) arrays of a strip of output pixels.
#pragma once

#include "fcn_math.h"

namespace fcn {
namespace cpu {

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
}  // namespace fcn

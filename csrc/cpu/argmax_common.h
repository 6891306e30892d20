// What both CPU argmax kernels (upsample_crop_argmax.cpp, interp_argmax.cpp) share: their work
// items, their 16-float vector type, and the inner loop that blends two rows of one class and folds
// the result into the running (best, index) arrays of a strip of output pixels.
#pragma once

// The 64-byte GCC vectors below (and fcn_math.h's templates on them) are passed by value only
// between inline functions of one level's copy of the kernels (each in its own namespace: see
// fcn_math.h), so the note that their parameter ABI differs between -m flags does not concern us.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <cstdint>

#include "fcn_math.h"

FCN_NAMESPACE_BEGIN
namespace cpu {

// Output rows [y0, y1) of image n.
struct RowRange {
  int64_t n;
  int y0, y1;
};

// GCC vectors of 16 floats / ints (one AVX-512 register; narrower levels split them).
typedef float vec16 __attribute__((vector_size(64)));
typedef int ivec16 __attribute__((vector_size(64)));

// The float vector of one register of this level (16, 8 or 4 lanes), for loops over independent
// lanes whose accumulators must stay in registers: a 16-float GCC vector split over narrower
// registers does not.
#if defined(__AVX512F__)
constexpr int kRegLanes = 16;
#elif defined(__AVX__)
constexpr int kRegLanes = 8;
#else
constexpr int kRegLanes = 4;
#endif
typedef float vreg __attribute__((vector_size(4 * kRegLanes)));

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

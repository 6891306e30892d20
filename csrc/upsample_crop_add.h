// upsample_crop_add's glue, shared by the CPU (cpu/upsample_crop_add.cpp) and CUDA
// (cuda/upsample_crop_add.cu) entry points: the module function's argument list, the call's
// geometry, and the switch from its runtime flags to a kernel template's compile-time parameters.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "dispatch.h"  // and fcn_math.h: FCN_HD

namespace fcn {

// Geometry of one call.
struct UpsampleAddGeom {
  int64_t n, c, h, w, k, s, oy, ox, out_h, out_w;  // x (N, C, h, w); deconv k/s; crop; output
  int64_t f, hs, ws, soy, sox;                      // skip (N, F, hs, ws) and its crop offset
  float scale;                                      // skip_scale of the fused 1×1 scoring
  // Fused features stored channels-last, (N, hs, ws, F) in memory: the trunk's own layout.
  bool skip_channels_last;
  // Where feature f of skip pixel (y, x) of image n lies, in elements.
  FCN_HD int64_t feature_index(int64_t n, int64_t f, int64_t y, int64_t x) const {
    const int64_t pixel = y * ws + x;
    return n * this->f * hs * ws + (skip_channels_last ? pixel * this->f + f : f * hs * ws + pixel);
  }
};

// One call as the module function receives it. weight (float32): the (k, k) filter when
// `bilinear`, else W (C, C, k, k). skip (0: none) is in x's dtype: scores (N, C, hs, ws), or
// features (N, f, hs, ws) when skip_weight (C, f) float32 is given (contiguous, or channels-last
// when g.skip_channels_last); skip_bias (C) float32 or 0.
struct UpsampleAddArgs {
  uintptr_t x, weight;
  bool bilinear;
  uintptr_t skip, skip_weight, skip_bias;
  UpsampleAddGeom g;
  uintptr_t out;
  int dtype;
};

}  // namespace fcn

FCN_NAMESPACE_BEGIN

// The Python-facing parameter list of both modules' upsample_crop_add (fcnfast/ops/native.py
// passes it positionally; the CUDA module appends the stream as `Extra`), as a callable for
// pybind11 that packs it into UpsampleAddArgs and calls entry(args, extra...).
template <typename... Extra, typename Entry>
auto upsample_crop_add_binding(Entry entry) {
  return [entry](uintptr_t x, uintptr_t weight, bool bilinear, uintptr_t skip,
                 uintptr_t skip_weight, uintptr_t skip_bias, int64_t n, int64_t c, int64_t h,
                 int64_t w, int64_t k, int64_t s, int64_t oy, int64_t ox, int64_t out_h,
                 int64_t out_w, int64_t f, int64_t hs, int64_t ws, int64_t soy, int64_t sox,
                 float skip_scale, bool skip_channels_last, uintptr_t out, int dtype,
                 Extra... extra) {
    if (skip_channels_last && skip_weight == 0)
      throw std::invalid_argument("upsample_crop_add: channels-last skip only for fused features");
    const UpsampleAddGeom g{n, c, h, w, k, s, oy, ox, out_h, out_w, f, hs, ws, soy, sox, skip_scale,
                            skip_channels_last};
    entry(UpsampleAddArgs{x, weight, bilinear, skip, skip_weight, skip_bias, g, out, dtype},
          extra...);
  };
}

// The call's tensors, typed (T: x's storage type).
template <typename T>
struct UpsampleAddPtrs {
  const T* x;
  const float* weight;
  const T* skip;
  const float* skip_w;
  const float* skip_b;
  T* out;
};

// Kernel<T, BILINEAR, HAS_SKIP, FUSED>::run(ptrs, g, extra...) for the call's dtype, weight kind
// (bilinear: depthwise), skip term (HAS_SKIP) and whether that term is scored by the fused 1×1 conv
// (FUSED); nothing for an empty output.
template <template <typename, bool, bool, bool> class Kernel, typename... Extra>
void dispatch_upsample_crop_add(const UpsampleAddArgs& a, Extra... extra) {
  const UpsampleAddGeom& g = a.g;
  if (g.n * g.c * g.out_h * g.out_w == 0) return;
  const bool has_skip = a.skip != 0, fused = a.skip != 0 && a.skip_weight != 0;
  FCN_DISPATCH_FLOAT(a.dtype, T, {
    const UpsampleAddPtrs<T> p{reinterpret_cast<const T*>(a.x),
                               reinterpret_cast<const float*>(a.weight),
                               reinterpret_cast<const T*>(a.skip),
                               reinterpret_cast<const float*>(a.skip_weight),
                               reinterpret_cast<const float*>(a.skip_bias),
                               reinterpret_cast<T*>(a.out)};
    FCN_BOOL_SWITCH(a.bilinear, BILINEAR,
        FCN_BOOL_SWITCH(has_skip, HAS_SKIP,
            FCN_BOOL_SWITCH(fused, FUSED,
                Kernel<T, BILINEAR, HAS_SKIP, FUSED>::run(p, g, extra...))));
  });
}

FCN_NAMESPACE_END

// overlay: uint8 frames blended with palette[labels]: floor(frame·keep + colour·alpha + 0.5).
#include "cpu/ops.h"
#include "dispatch.h"

FCN_NAMESPACE_BEGIN
namespace cpu {

template <typename L>
static void overlay_kernel(const uint8_t* frames, const L* labels, const uint8_t* palette,
                           int64_t pixels, float keep, float alpha, uint8_t* out) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pixels; ++p) {
    const uint8_t* colour = palette + static_cast<int64_t>(labels[p]) * 3;  // range checked in Python
    for (int c = 0; c < 3; ++c)
      out[p * 3 + c] = overlay_value(frames[p * 3 + c], colour[c], keep, alpha);
  }
}

void overlay(uintptr_t frames, uintptr_t labels, int label_dtype, uintptr_t palette,
             int64_t /*palette_size*/, int64_t n, int64_t h, int64_t w, float keep, float alpha,
             uintptr_t out) {
  FCN_DISPATCH_LABEL(label_dtype, L,
      overlay_kernel<L>(reinterpret_cast<const uint8_t*>(frames), reinterpret_cast<const L*>(labels),
                        reinterpret_cast<const uint8_t*>(palette), n * h * w, keep, alpha,
                        reinterpret_cast<uint8_t*>(out)));
}

}  // namespace cpu
FCN_NAMESPACE_END

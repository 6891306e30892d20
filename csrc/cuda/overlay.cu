// overlay: uint8 frames blended with palette[labels]: floor(frame·keep + colour·alpha + 0.5).
#include "cuda/launch.h"
#include "cuda/ops.h"
#include "dispatch.h"

namespace fcn {
namespace cuda {

template <typename L>
__global__ void overlay_kernel(const uint8_t* __restrict__ frames, const L* __restrict__ labels,
                               const uint8_t* __restrict__ palette, int64_t pixels, float keep,
                               float alpha, uint8_t* __restrict__ out) {
  FCN_GRID_STRIDE_LOOP(p, pixels) {
    const uint8_t* colour = palette + static_cast<int64_t>(labels[p]) * 3;  // range checked in Python
#pragma unroll
    for (int c = 0; c < 3; ++c) out[p * 3 + c] = overlay_value(frames[p * 3 + c], colour[c], keep, alpha);
  }
}

void overlay(uintptr_t frames, uintptr_t labels, int label_dtype, uintptr_t palette,
             int64_t /*palette_size*/, int64_t n, int64_t h, int64_t w, float keep, float alpha,
             uintptr_t out, uintptr_t stream) {
  const int64_t pixels = n * h * w;
  if (pixels == 0) return;
  FCN_DISPATCH_LABEL(label_dtype, L,
      overlay_kernel<L><<<grid_for(pixels), kThreads, 0, as_stream(stream)>>>(
          reinterpret_cast<const uint8_t*>(frames), reinterpret_cast<const L*>(labels),
          reinterpret_cast<const uint8_t*>(palette), pixels, keep, alpha,
          reinterpret_cast<uint8_t*>(out)));
  check_launch("overlay");
}

}  // namespace cuda
}  // namespace fcn

// preprocess: uint8 (N, H, W, 3) RGB → (N, 3, H, W) or channels-last, (v·scale − mean) / std.
#include "cuda/launch.h"
#include "cuda/ops.h"
#include "dispatch.h"

namespace fcn {
namespace cuda {

struct Norm {
  float mean[3], stdev[3];
};

template <typename T>
__global__ void preprocess_kernel(const uint8_t* __restrict__ src, T* __restrict__ dst,
                                  int64_t pixels, int64_t hw, float scale, Norm norm, bool bgr,
                                  bool divide, bool channels_last) {
  FCN_GRID_STRIDE_LOOP(p, pixels) {
    const int64_t img = p / hw, q = p - img * hw;
    const uint8_t* in = src + p * 3;
#pragma unroll
    for (int oc = 0; oc < 3; ++oc) {
      const int ic = preprocess_source_channel(oc, bgr);
      const float v = preprocess_value(in[ic], scale, norm.mean[oc], norm.stdev[oc], divide);
      const int64_t o = channels_last ? p * 3 + oc : (img * 3 + oc) * hw + q;
      dst[o] = from_float<T>(v);
    }
  }
}

void preprocess(uintptr_t frames, int64_t n, int64_t h, int64_t w, float scale,
                std::array<float, 3> mean, std::array<float, 3> stdev, bool bgr, bool divide,
                bool channels_last, uintptr_t out, int out_dtype, uintptr_t stream) {
  const int64_t pixels = n * h * w;
  if (pixels == 0) return;
  Norm norm;
  for (int c = 0; c < 3; ++c) norm.mean[c] = mean[c], norm.stdev[c] = stdev[c];
  FCN_DISPATCH_FLOAT(out_dtype, T,
      preprocess_kernel<T><<<grid_for(pixels), kThreads, 0, as_stream(stream)>>>(
          reinterpret_cast<const uint8_t*>(frames), reinterpret_cast<T*>(out), pixels, h * w,
          scale, norm, bgr, divide, channels_last));
  check_launch("preprocess");
}

}  // namespace cuda
}  // namespace fcn

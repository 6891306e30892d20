// preprocess: uint8 (N, H, W, 3) RGB → (N, 3, H, W) or channels-last, (v·scale − mean) / std.
#include "cpu/ops.h"
#include "dispatch.h"

FCN_NAMESPACE_BEGIN
namespace cpu {

template <typename T>
static void preprocess_kernel(const uint8_t* src, T* dst, int64_t n, int64_t hw, float scale,
                              const float* mean, const float* stdev, bool bgr, bool divide,
                              bool channels_last) {
#pragma omp parallel for schedule(static)
  for (int64_t img = 0; img < n; ++img) {
    const uint8_t* in = src + img * hw * 3;
    T* o = dst + img * hw * 3;
    for (int oc = 0; oc < 3; ++oc) {
      const int ic = preprocess_source_channel(oc, bgr);
      const float m = mean[oc], s = stdev[oc];
      if (channels_last) {
        for (int64_t p = 0; p < hw; ++p)
          o[p * 3 + oc] = from_float<T>(preprocess_value(in[p * 3 + ic], scale, m, s, divide));
      } else {
        T* plane = o + oc * hw;
        for (int64_t p = 0; p < hw; ++p)
          plane[p] = from_float<T>(preprocess_value(in[p * 3 + ic], scale, m, s, divide));
      }
    }
  }
}

void preprocess(uintptr_t frames, int64_t n, int64_t h, int64_t w, float scale,
                std::array<float, 3> mean, std::array<float, 3> stdev, bool bgr, bool divide,
                bool channels_last, uintptr_t out, int out_dtype) {
  FCN_DISPATCH_FLOAT(out_dtype, T,
      preprocess_kernel<T>(reinterpret_cast<const uint8_t*>(frames), reinterpret_cast<T*>(out),
                           n, h * w, scale, mean.data(), stdev.data(), bgr, divide, channels_last));
}

}  // namespace cpu
FCN_NAMESPACE_END

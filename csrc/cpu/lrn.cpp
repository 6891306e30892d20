// Cross-channel LRN of a channels-last map (csrc/lrn.h has the arithmetic): each pixel's channels
// are contiguous, so the window sum of squares slides along them. Pixels may be strided (the
// border cache passes a map's core as a view); the output is a contiguous channels-last map.
#include <algorithm>
#include <vector>

#include "cpu/ops.h"
#include "dispatch.h"
#include "lrn.h"

FCN_NAMESPACE_BEGIN
namespace cpu {
namespace {

template <typename T, bool kBeta075>
void lrn_kernel(const T* x, T* y, int64_t n, int64_t c, int64_t h, int64_t w, int64_t sn,
                int64_t sh, int64_t sw, int64_t size, float alpha, float beta, float k) {
  const int64_t before = size / 2, after = (size - 1) / 2;
  const float inv_size = 1.0f / static_cast<float>(size);
#pragma omp parallel
  {
    std::vector<float> buf(3 * c + size);
    float* __restrict a = buf.data();
    float* __restrict sq = a + c;  // c + size - 1 squares, `before` zeros first
    float* __restrict win = sq + c + size;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < n * h; ++p) {
      const int64_t img = p / h, row = p % h;
      for (int64_t col = 0; col < w; ++col) {
        const T* __restrict src = x + img * sn + row * sh + col * sw;
        T* __restrict dst = y + ((img * h + row) * w + col) * c;
        for (int64_t ch = 0; ch < c; ++ch) a[ch] = to_float(src[ch]);
        for (int64_t j = 0; j < before; ++j) sq[j] = 0.0f;
        for (int64_t ch = 0; ch < c; ++ch) sq[before + ch] = a[ch] * a[ch];
        for (int64_t j = before + c; j < c + size; ++j) sq[j] = 0.0f;
        // win[ch] = Σ a² over channels ch - before .. ch + after, in channel order.
        for (int64_t ch = 0; ch < c; ++ch) win[ch] = sq[ch];
        for (int64_t j = 1; j <= before + after; ++j)
          for (int64_t ch = 0; ch < c; ++ch) win[ch] += sq[ch + j];
        for (int64_t ch = 0; ch < c; ++ch)
          dst[ch] = from_float<T>(lrn_value<kBeta075>(a[ch], win[ch], inv_size, alpha, beta, k));
      }
    }
  }
}

}  // namespace

void lrn(uintptr_t x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t sn, int64_t sh, int64_t sw,
         int64_t size, float alpha, float beta, float k, uintptr_t y, int dtype) {
  FCN_DISPATCH_FLOAT(dtype, T, FCN_BOOL_SWITCH(beta == 0.75f, kBeta075,
      lrn_kernel<T, kBeta075>(reinterpret_cast<const T*>(x), reinterpret_cast<T*>(y), n, c, h, w, sn,
                              sh, sw, size, alpha, beta, k)));
}

}  // namespace cpu
FCN_NAMESPACE_END

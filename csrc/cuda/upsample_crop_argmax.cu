// upsample_crop_argmax: labels = argmax_c crop(convT(x, W, s), (oy, ox), (H, W)); the
// full-resolution logits are never stored (head-ops.md, op 2). One thread per output pixel
// (grid-stride), classes in increasing order with a running argmax (fcn::argmax_update).
//
// Depthwise path: the pixel's taps and weights once (fcn::deconv_weights), then
// fcn::depthwise_argmax_pixel — per class fcn::deconv_value of its 4 inputs, the CPU kernel's
// arithmetic operation for operation, and the non-finite spreading rule.
// General path (learned C×C): fcn::learned_argmax_pixel_slices, the loop the CPU kernel runs at the
// edges of a row, in the order of its vectorised blocks; W arrives as (k, k, C_in, C_out) float32.
// Every pixel of one phase (output coordinates mod s) uses the same four (C_in, C_out) slices of
// W, so where they fit in shared memory the grid runs phase by phase (blockIdx.y) and each block
// stages its phase's slices once (4·C² loads per block instead of per pixel); all threads then
// read the same weight at once (a broadcast). Larger C reads W from global memory.
#include <cuda_runtime.h>

#include "cuda/launch.h"
#include "cuda/ops.h"
#include "dispatch.h"

namespace fcn {
namespace cuda {

// KIND: the WeightKind of `weight` (learned W, 2-D bilinear filter, or its separable factor).
template <typename T, typename L, int KIND>
__global__ void upsample_crop_argmax_kernel(const T* __restrict__ x,
                                            const float* __restrict__ weight, int64_t total,
                                            int C, int h, int w, int k, int s, int oy, int ox,
                                            int out_h, int out_w, L* __restrict__ labels,
                                            T* __restrict__ scores) {
  const int64_t hw = static_cast<int64_t>(h) * w;
  const int64_t plane = static_cast<int64_t>(out_h) * out_w;
  FCN_GRID_STRIDE_LOOP(p, total) {
    const OutPixel px = out_pixel(p, plane, out_w);
    const Taps ty = deconv_taps(px.y + oy, s, k, h);
    const Taps tx = deconv_taps(px.x + ox, s, k, w);
    const T* xn = x + px.img * C * hw;
    float best;
    int best_idx;
    if constexpr (KIND == kLearned) {
      learned_argmax_pixel(xn, hw, w, weight, C, k, ty, tx, best, best_idx);
    } else {
      const PixelTaps t = pixel_taps(ty, tx, w);
      depthwise_argmax_pixel(xn, hw, C, t,
                             deconv_weights(weight, KIND == kBilinearSeparable, k, ty, tx, t),
                             best, best_idx);
    }
    labels[p] = static_cast<L>(best_idx);
    if (scores) scores[p] = from_float<T>(best);
  }
}

// The learned path, one phase per blockIdx.y: the phase's pixels (y0 + j·s, x0 + i·s), j < hp,
// i < wp, of every image, grid-stride over blockIdx.x.
template <typename T, typename L>
__global__ void learned_staged_kernel(const T* __restrict__ x, const float* __restrict__ weight,
                                      int n, int C, int h, int w, int k, int s, int oy, int ox,
                                      int out_h, int out_w, int pcols, int hp, int wp,
                                      L* __restrict__ labels, T* __restrict__ scores) {
  extern __shared__ float staged[];  // 4 slices of C·C
  const int y0 = blockIdx.y / pcols, x0 = blockIdx.y % pcols;
  const Taps ty0 = deconv_taps(y0 + oy, s, k, h), tx0 = deconv_taps(x0 + ox, s, k, w);
  const int64_t cc = static_cast<int64_t>(C) * C;
  for (int t = 0; t < 4; ++t) {
    const float* src = weight + learned_tap_slice(t, C, k, ty0, tx0);
    for (int64_t i = threadIdx.x; i < cc; i += blockDim.x) staged[t * cc + i] = src[i];
  }
  __syncthreads();
  const float* slices[4] = {staged, staged + cc, staged + 2 * cc, staged + 3 * cc};
  const int64_t hw = static_cast<int64_t>(h) * w;
  const int64_t per_image = static_cast<int64_t>(hp) * wp;
  const int64_t total = static_cast<int64_t>(n) * per_image;
  FCN_GRID_STRIDE_LOOP(q, total) {
    const int64_t img = q / per_image;
    const int64_t r = q - img * per_image;
    const int y = y0 + static_cast<int>(r / wp) * s, xx = x0 + static_cast<int>(r % wp) * s;
    if (y >= out_h || xx >= out_w) continue;  // this phase's grid is smaller than the largest
    const Taps ty = deconv_taps(y + oy, s, k, h), tx = deconv_taps(xx + ox, s, k, w);
    float best;
    int best_idx;
    learned_argmax_pixel_slices(x + img * C * hw, hw, w, slices, C, ty, tx, best, best_idx);
    const int64_t p = (img * out_h + y) * out_w + xx;
    labels[p] = static_cast<L>(best_idx);
    if (scores) scores[p] = from_float<T>(best);
  }
}

template <typename T, typename L>
bool launch_staged(uintptr_t x, uintptr_t weight, int64_t n, int64_t c, int64_t h, int64_t w,
                   int64_t k, int64_t s, int64_t oy, int64_t ox, int64_t out_h, int64_t out_w,
                   uintptr_t labels, uintptr_t scores, cudaStream_t stream) {
  PhaseGrid pg;
  if (!phase_grid(c, s, out_h, out_w, n, pg)) return false;
  learned_staged_kernel<T, L><<<pg.grid, kThreads, pg.bytes, stream>>>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const float*>(weight), (int)n, (int)c,
      (int)h, (int)w, (int)k, (int)s, (int)oy, (int)ox, (int)out_h, (int)out_w, pg.pcols, pg.hp,
      pg.wp, reinterpret_cast<L*>(labels), reinterpret_cast<T*>(scores));
  return true;
}

template <typename T, typename L, int KIND>
void launch(uintptr_t x, uintptr_t weight, int64_t total, int64_t c, int64_t h, int64_t w,
            int64_t k, int64_t s, int64_t oy, int64_t ox, int64_t out_h, int64_t out_w,
            uintptr_t labels, uintptr_t scores, cudaStream_t stream) {
  upsample_crop_argmax_kernel<T, L, KIND><<<grid_for(total), kThreads, 0, stream>>>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const float*>(weight), total, (int)c,
      (int)h, (int)w, (int)k, (int)s, (int)oy, (int)ox, (int)out_h, (int)out_w,
      reinterpret_cast<L*>(labels), reinterpret_cast<T*>(scores));
}

void upsample_crop_argmax(uintptr_t x, uintptr_t weight, int weight_kind, int64_t n, int64_t c,
                          int64_t h, int64_t w, int64_t k, int64_t s, int64_t oy, int64_t ox,
                          int64_t out_h, int64_t out_w, uintptr_t labels, int label_dtype,
                          uintptr_t scores, int dtype, uintptr_t stream) {
  const int64_t total = n * out_h * out_w;
  if (total == 0) return;
  const cudaStream_t st = as_stream(stream);
  FCN_DISPATCH_FLOAT(dtype, T,
    FCN_DISPATCH_ARGMAX_LABEL(label_dtype, L, {
      if (weight_kind == kLearned) {
        if (!launch_staged<T, L>(x, weight, n, c, h, w, k, s, oy, ox, out_h, out_w, labels, scores,
                                 st))
          launch<T, L, kLearned>(x, weight, total, c, h, w, k, s, oy, ox, out_h, out_w, labels,
                                 scores, st);
      }
      else if (weight_kind == kBilinearSeparable)
        launch<T, L, kBilinearSeparable>(x, weight, total, c, h, w, k, s, oy, ox, out_h, out_w,
                                         labels, scores, st);
      else
        launch<T, L, kBilinear2D>(x, weight, total, c, h, w, k, s, oy, ox, out_h, out_w, labels,
                                  scores, st);
    }));
  check_launch("upsample_crop_argmax");
}

}  // namespace cuda
}  // namespace fcn

// interp_argmax: labels = argmax_c F.interpolate(x, (H, W), bilinear, align_corners=False), the
// interpolated logits never stored (head-ops.md, op 3). One thread per output pixel (grid-stride):
// its source rows/columns and weights once (fcn::interp_source, PyTorch's rule; the float32 scale
// comes from Python), then per class fcn::interp_value and a running argmax (fcn::argmax_update):
// the CPU kernel's arithmetic operation for operation.
#include <cuda_runtime.h>

#include "cuda/launch.h"
#include "cuda/ops.h"
#include "dispatch.h"

namespace fcn {
namespace cuda {

template <typename T, typename L>
__global__ void interp_argmax_kernel(const T* __restrict__ x, int64_t total, int C, int h, int w,
                                     int out_h, int out_w, float scale_h, float scale_w,
                                     L* __restrict__ labels, T* __restrict__ scores) {
  const int64_t hw = static_cast<int64_t>(h) * w;
  const int64_t plane = static_cast<int64_t>(out_h) * out_w;
  FCN_GRID_STRIDE_LOOP(p, total) {
    const OutPixel px = out_pixel(p, plane, out_w);
    const int64_t img = px.img;
    const int y = px.y, xo = px.x;
    const Interp ty = interp_source(y, h, out_h, scale_h);
    const Interp tx = interp_source(xo, w, out_w, scale_w);
    const int64_t o00 = (int64_t)ty.i0 * w + tx.i0, o01 = (int64_t)ty.i0 * w + tx.i1,
                  o10 = (int64_t)ty.i1 * w + tx.i0, o11 = (int64_t)ty.i1 * w + tx.i1;
    const T* xc = x + img * C * hw;
    float best = -__int_as_float(0x7f800000);  // -inf
    int best_idx = 0;
    for (int c = 0; c < C; ++c, xc += hw) {
      const float v = interp_value(ty, tx, to_float(xc[o00]), to_float(xc[o01]), to_float(xc[o10]),
                                   to_float(xc[o11]));
      argmax_update(v, c, best, best_idx);
    }
    labels[p] = static_cast<L>(best_idx);
    if (scores) scores[p] = from_float<T>(best);
  }
}

void interp_argmax(uintptr_t x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h,
                   int64_t out_w, float scale_h, float scale_w, uintptr_t labels, int label_dtype,
                   uintptr_t scores, int dtype, uintptr_t stream) {
  const int64_t total = n * out_h * out_w;
  if (total == 0) return;
  FCN_DISPATCH_FLOAT(dtype, T,
    FCN_DISPATCH_ARGMAX_LABEL(label_dtype, L,
      interp_argmax_kernel<T, L><<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
          reinterpret_cast<const T*>(x), total, (int)c, (int)h, (int)w, (int)out_h, (int)out_w,
          scale_h, scale_w, reinterpret_cast<L*>(labels), reinterpret_cast<T*>(scores))));
  check_launch("interp_argmax");
}

}  // namespace cuda
}  // namespace fcn

// upsample_crop_argmax: labels = argmax_c crop(convT(x, W, s), (oy, ox), (H, W)); the
// full-resolution logits are never stored (head-ops.md, op 2). One thread per output pixel
// (grid-stride), classes in increasing order with a running argmax (fcn::argmax_update).
//
// Depthwise path: the pixel's taps and weights once, then per class fcn::deconv_value of its 4
// inputs (invalid taps: weight 0, input 0) — the CPU kernel's arithmetic operation for operation —
// and the non-finite spreading rule of fcn::spread_nonfinite.
// General path (learned C×C): per output class, Σ over valid taps and input classes of x·W with
// fcn::mac in the CPU kernel's order; W arrives as (k, k, C_in, C_out) float32.
#include <cuda_runtime.h>

#include "cuda/launch.h"
#include "cuda/ops.h"
#include "dispatch.h"

namespace fcn {
namespace cuda {

template <typename T, typename L, bool SEPARABLE>
__global__ void upsample_bilinear_argmax_kernel(const T* __restrict__ x,
                                                const float* __restrict__ filt, int64_t total,
                                                int C, int h, int w, int k, int s, int oy, int ox,
                                                int out_h, int out_w, L* __restrict__ labels,
                                                T* __restrict__ scores) {
  const int64_t hw = static_cast<int64_t>(h) * w;
  const int64_t plane = static_cast<int64_t>(out_h) * out_w;
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < total;
       p += (int64_t)gridDim.x * blockDim.x) {
    const OutPixel px = out_pixel(p, plane, out_w);
    const int64_t img = px.img;
    const int y = px.y, xo = px.x;
    const Taps ty = deconv_taps(y + oy, s, k, h);
    const Taps tx = deconv_taps(xo + ox, s, k, w);
    const bool v00 = ty.v0 && tx.v0, v01 = ty.v0 && tx.v1, v10 = ty.v1 && tx.v0,
               v11 = ty.v1 && tx.v1;
    float wy0, wy1, w00, w01, w10, w11;
    if (SEPARABLE) {  // filt: the 1-D factor g
      wy0 = ty.v0 ? filt[ty.k0] : 0.0f;
      wy1 = ty.v1 ? filt[ty.k1] : 0.0f;
      w00 = w10 = tx.v0 ? filt[tx.k0] : 0.0f;
      w01 = w11 = tx.v1 ? filt[tx.k1] : 0.0f;
    } else {  // filt: the (k, k) filter
      wy0 = ty.v0 ? 1.0f : 0.0f;
      wy1 = ty.v1 ? 1.0f : 0.0f;
      w00 = v00 ? filt[ty.k0 * k + tx.k0] : 0.0f;
      w01 = v01 ? filt[ty.k0 * k + tx.k1] : 0.0f;
      w10 = v10 ? filt[ty.k1 * k + tx.k0] : 0.0f;
      w11 = v11 ? filt[ty.k1 * k + tx.k1] : 0.0f;
    }
    const int64_t o00 = (int64_t)ty.i0 * w + tx.i0, o01 = (int64_t)ty.i0 * w + tx.i1,
                  o10 = (int64_t)ty.i1 * w + tx.i0, o11 = (int64_t)ty.i1 * w + tx.i1;
    const T* xc = x + img * C * hw;
    float best = -__int_as_float(0x7f800000);  // -inf
    int best_idx = 0;
    bool bad0 = false, bad_rest = false, v0_nan = false;
    for (int c = 0; c < C; ++c, xc += hw) {
      const float x00 = v00 ? to_float(xc[o00]) : 0.0f, x01 = v01 ? to_float(xc[o01]) : 0.0f,
                  x10 = v10 ? to_float(xc[o10]) : 0.0f, x11 = v11 ? to_float(xc[o11]) : 0.0f;
      const float v = deconv_value(wy0, wy1, w00, w01, w10, w11, x00, x01, x10, x11);
      const bool bad = !is_finite(x00) || !is_finite(x01) || !is_finite(x10) || !is_finite(x11);
      if (c == 0) {
        bad0 = bad;
        v0_nan = is_nan(v);
      } else {
        bad_rest = bad_rest || bad;
      }
      argmax_update(v, c, best, best_idx);
    }
    spread_nonfinite(bad0, bad_rest, v0_nan, C, best, best_idx);
    labels[p] = static_cast<L>(best_idx);
    if (scores) scores[p] = from_float<T>(best);
  }
}

template <typename T, typename L>
__global__ void upsample_general_argmax_kernel(const T* __restrict__ x,
                                               const float* __restrict__ wt, int64_t total, int C,
                                               int h, int w, int k, int s, int oy, int ox,
                                               int out_h, int out_w, L* __restrict__ labels,
                                               T* __restrict__ scores) {
  const int64_t hw = static_cast<int64_t>(h) * w;
  const int64_t plane = static_cast<int64_t>(out_h) * out_w;
  const int64_t tap_stride = static_cast<int64_t>(C) * C;
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < total;
       p += (int64_t)gridDim.x * blockDim.x) {
    const OutPixel px = out_pixel(p, plane, out_w);
    const int64_t img = px.img;
    const int y = px.y, xo = px.x;
    const Taps ty = deconv_taps(y + oy, s, k, h);
    const Taps tx = deconv_taps(xo + ox, s, k, w);
    const bool vy[2] = {ty.v0, ty.v1}, vx[2] = {tx.v0, tx.v1};
    const int iy[2] = {ty.i0, ty.i1}, ix[2] = {tx.i0, tx.i1};
    const int ky[2] = {ty.k0, ty.k1}, kx[2] = {tx.k0, tx.k1};
    const T* xn = x + img * C * hw;
    float best = -__int_as_float(0x7f800000);  // -inf
    int best_idx = 0;
    for (int co = 0; co < C; ++co) {
      float acc = 0.0f;
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const int a = t >> 1, b = t & 1;
        if (!vy[a] || !vx[b]) continue;  // a tap outside the input is no term at all
        const T* xs = xn + (int64_t)iy[a] * w + ix[b];
        const float* wc = wt + (int64_t)(ky[a] * k + kx[b]) * tap_stride + co;
        for (int ci = 0; ci < C; ++ci) acc = mac(acc, to_float(xs[ci * hw]), wc[(int64_t)ci * C]);
      }
      argmax_update(acc, co, best, best_idx);
    }
    labels[p] = static_cast<L>(best_idx);
    if (scores) scores[p] = from_float<T>(best);
  }
}

void upsample_crop_argmax(uintptr_t x, uintptr_t weight, int weight_kind, int64_t n, int64_t c,
                          int64_t h, int64_t w, int64_t k, int64_t s, int64_t oy, int64_t ox,
                          int64_t out_h, int64_t out_w, uintptr_t labels, int label_dtype,
                          uintptr_t scores, int dtype, uintptr_t stream) {
  const int64_t total = n * out_h * out_w;
  if (total == 0) return;
  const float* wts = reinterpret_cast<const float*>(weight);
  const cudaStream_t st = as_stream(stream);
  FCN_DISPATCH_FLOAT(dtype, T,
    FCN_DISPATCH_LABEL(label_dtype, L, {
      const T* xp = reinterpret_cast<const T*>(x);
      L* lp = reinterpret_cast<L*>(labels);
      T* sp = reinterpret_cast<T*>(scores);
      if (weight_kind == kLearned) {
        upsample_general_argmax_kernel<T, L><<<grid_for(total), kThreads, 0, st>>>(
            xp, wts, total, (int)c, (int)h, (int)w, (int)k, (int)s, (int)oy, (int)ox, (int)out_h,
            (int)out_w, lp, sp);
      } else {
        FCN_BOOL_SWITCH(weight_kind == kBilinearSeparable, SEPARABLE,
          upsample_bilinear_argmax_kernel<T, L, SEPARABLE><<<grid_for(total), kThreads, 0, st>>>(
              xp, wts, total, (int)c, (int)h, (int)w, (int)k, (int)s, (int)oy, (int)ox,
              (int)out_h, (int)out_w, lp, sp));
      }
    }));
  check_launch("upsample_crop_argmax");
}

}  // namespace cuda
}  // namespace fcn

// upsample_crop_add: crop(convT(x, W, s), off, (H, W)) + crop(skip score, skip_off, (H, W)) in one
// launch, float32 accumulation, the full transposed-conv map never materialised.
//
// One thread per output pixel and block of CB classes (grid-stride loop; x fastest, so a warp's
// loads and stores are coalesced along the row). With k <= 2s a pixel has <= 2×2 taps
// (fcn::deconv_taps):
// * bilinear (depthwise, CB = 1 unless fused): fcn::depthwise_value of the 4 taps x·filt;
// * learned (C×C, CB = 8): for each valid tap, Σ over C_in of W[ci, co, ky, kx]·x — each x value
//   loaded once for CB classes;
// * fused skip: Σ_f W_skip[co, f]·feat[f], each feature loaded once for CB classes, then
//   fcn::skip_score (scale, bias).
// Summation orders (taps (0,0) (0,1) (1,0) (1,1), then C_in ascending; F ascending) are those of
// csrc/cpu/upsample_crop_add.cpp, so both backends round alike.
#include "cuda/launch.h"
#include "cuda/ops.h"
#include "dispatch.h"
#include "geometry.h"

namespace fcn {
namespace cuda {

using Geom = UpsampleAddGeom;

template <typename T, bool BILINEAR, bool HAS_SKIP, bool FUSED, int CB>
__global__ void upsample_crop_add_kernel(const T* __restrict__ x, const float* __restrict__ weight,
                                         const T* __restrict__ skip,
                                         const float* __restrict__ skip_w,
                                         const float* __restrict__ skip_b, T* __restrict__ out,
                                         Geom g, int64_t cblocks, int64_t total) {
  constexpr bool kFused = HAS_SKIP && FUSED;
  constexpr bool kScores = HAS_SKIP && !FUSED;
  const int64_t plane = g.h * g.w, kk = g.k * g.k, skip_plane = g.hs * g.ws;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t xo, yo, c0, n;
    if (total <= 0x7fffffff) {  // 32-bit index arithmetic when it fits (uniform branch)
      uint32_t t = (uint32_t)idx;
      xo = t % (uint32_t)g.out_w;
      t /= (uint32_t)g.out_w;
      yo = t % (uint32_t)g.out_h;
      t /= (uint32_t)g.out_h;
      c0 = (int64_t)(t % (uint32_t)cblocks) * CB;
      n = t / (uint32_t)cblocks;
    } else {
      int64_t t = idx;
      xo = t % g.out_w;
      t /= g.out_w;
      yo = t % g.out_h;
      t /= g.out_h;
      c0 = (t % cblocks) * CB;
      n = t / cblocks;
    }
    const Taps ty = deconv_taps((int)(yo + g.oy), (int)g.s, (int)g.k, (int)g.h);
    const Taps tx = deconv_taps((int)(xo + g.ox), (int)g.s, (int)g.k, (int)g.w);
    const T* x_img = x + n * g.c * plane;

    float acc[CB];
    if (BILINEAR) {
      const float f00 = weight[ty.k0 * g.k + tx.k0], f01 = weight[ty.k0 * g.k + tx.k1];
      const float f10 = weight[ty.k1 * g.k + tx.k0], f11 = weight[ty.k1 * g.k + tx.k1];
      const int64_t o00 = (int64_t)ty.i0 * g.w + tx.i0, o01 = (int64_t)ty.i0 * g.w + tx.i1;
      const int64_t o10 = (int64_t)ty.i1 * g.w + tx.i0, o11 = (int64_t)ty.i1 * g.w + tx.i1;
      const bool v00 = ty.v0 && tx.v0, v01 = ty.v0 && tx.v1;
      const bool v10 = ty.v1 && tx.v0, v11 = ty.v1 && tx.v1;
#pragma unroll
      for (int m = 0; m < CB; ++m) {
        // Lanes past the last class compute a copy of it and are never stored.
        const int64_t ch = c0 + m < g.c ? c0 + m : g.c - 1;
        const T* p = x_img + ch * plane;
        acc[m] = depthwise_value(v00 ? to_float(p[o00]) : 0.0f, f00, v01 ? to_float(p[o01]) : 0.0f,
                                 f01, v10 ? to_float(p[o10]) : 0.0f, f10,
                                 v11 ? to_float(p[o11]) : 0.0f, f11);
      }
    } else {
#pragma unroll
      for (int m = 0; m < CB; ++m) acc[m] = 0.0f;
      for (int tap = 0; tap < 4; ++tap) {
        const bool row1 = tap >> 1, col1 = tap & 1;
        if (!((row1 ? ty.v1 : ty.v0) && (col1 ? tx.v1 : tx.v0))) continue;
        const int64_t iy = row1 ? ty.i1 : ty.i0, ky = row1 ? ty.k1 : ty.k0;
        const int64_t ix = col1 ? tx.i1 : tx.i0, kx = col1 ? tx.k1 : tx.k0;
        const T* xp = x_img + iy * g.w + ix;
        const float* wp = weight + (c0 * g.k + ky) * g.k + kx;  // W[ci, c0 + m, ky, kx]
        for (int64_t ci = 0; ci < g.c; ++ci) {
          const float xv = to_float(xp[ci * plane]);
          const float* wc = wp + ci * g.c * kk;
#pragma unroll
          for (int m = 0; m < CB; ++m)
            if (c0 + m < g.c) acc[m] = acc[m] + wc[m * kk] * xv;
        }
      }
    }

    const int64_t sy = yo + g.soy, sx = xo + g.sox;
    if (kFused) {
      float dot[CB];
#pragma unroll
      for (int m = 0; m < CB; ++m) dot[m] = 0.0f;
      const T* fp = skip + n * g.f * skip_plane + sy * g.ws + sx;
      const float* wf = skip_w + c0 * g.f;
      for (int64_t f = 0; f < g.f; ++f) {
        const float fv = to_float(fp[f * skip_plane]);
#pragma unroll
        for (int m = 0; m < CB; ++m)
          if (c0 + m < g.c) dot[m] = dot[m] + wf[m * g.f + f] * fv;
      }
#pragma unroll
      for (int m = 0; m < CB; ++m)
        if (c0 + m < g.c)
          acc[m] = acc[m] + skip_score(dot[m], g.scale, skip_b ? skip_b[c0 + m] : 0.0f);
    }

#pragma unroll
    for (int m = 0; m < CB; ++m) {
      const int64_t co = c0 + m;
      if (co >= g.c) break;
      float v = acc[m];
      if (kScores) v = v + to_float(skip[((n * g.c + co) * g.hs + sy) * g.ws + sx]);
      out[((n * g.c + co) * g.out_h + yo) * g.out_w + xo] = from_float<T>(v);
    }
  }
}

template <typename T, bool BILINEAR, bool HAS_SKIP, bool FUSED>
void launch(const T* x, const float* weight, const T* skip, const float* skip_w,
            const float* skip_b, T* out, const Geom& g, cudaStream_t stream) {
  // Depthwise without scoring: one class per thread; otherwise 8 classes share each x / feature
  // load.
  constexpr int CB = (BILINEAR && !(HAS_SKIP && FUSED)) ? 1 : 8;
  const int64_t cblocks = (g.c + CB - 1) / CB;
  const int64_t total = g.n * cblocks * g.out_h * g.out_w;
  upsample_crop_add_kernel<T, BILINEAR, HAS_SKIP, FUSED, CB>
      <<<grid_for(total), kThreads, 0, stream>>>(x, weight, skip, skip_w, skip_b, out, g, cblocks,
                                                 total);
}

void upsample_crop_add(uintptr_t x, uintptr_t weight, bool bilinear, uintptr_t skip,
                       uintptr_t skip_weight, uintptr_t skip_bias, int64_t n, int64_t c, int64_t h,
                       int64_t w, int64_t k, int64_t s, int64_t oy, int64_t ox, int64_t out_h,
                       int64_t out_w, int64_t f, int64_t hs, int64_t ws, int64_t soy, int64_t sox,
                       float skip_scale, uintptr_t out, int dtype, uintptr_t stream) {
  if (n * c * out_h * out_w == 0) return;
  const Geom g{n, c, h, w, k, s, oy, ox, out_h, out_w, f, hs, ws, soy, sox, skip_scale};
  const bool has_skip = skip != 0, fused = skip != 0 && skip_weight != 0;
  const float* wt = reinterpret_cast<const float*>(weight);
  const float* sw = reinterpret_cast<const float*>(skip_weight);
  const float* sb = reinterpret_cast<const float*>(skip_bias);
  FCN_DISPATCH_FLOAT(dtype, T,
      FCN_BOOL_SWITCH(bilinear, BILINEAR,
          FCN_BOOL_SWITCH(has_skip, HAS_SKIP,
              FCN_BOOL_SWITCH(fused, FUSED,
                  launch<T, BILINEAR, HAS_SKIP, FUSED>(
                      reinterpret_cast<const T*>(x), wt, reinterpret_cast<const T*>(skip), sw, sb,
                      reinterpret_cast<T*>(out), g, as_stream(stream))))));
  check_launch("upsample_crop_add");
}

}  // namespace cuda
}  // namespace fcn

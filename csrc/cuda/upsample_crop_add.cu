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
//
// The learned path with C <= 54 runs as the Triton kernel does, phase by phase (output pixel mod
// s, blockIdx.y): every pixel of a phase uses the same four (ky, kx) slices of W, which each
// block stages in shared memory once, laid out [tap][C_in][C_out]; the threads of a warp (one
// class block, consecutive pixels of the phase) then read each weight at once (a broadcast).
#include "cuda/launch.h"
#include "cuda/ops.h"
#include "upsample_crop_add.h"

namespace fcn {
namespace cuda {

using Geom = UpsampleAddGeom;

// STAGED (learned only): blockIdx.y is the phase (y0, x0) = (y / pcols, y % pcols), `total`
// counts its (n, class block, j < hp, i < wp) items, pixel (y0 + j·s, x0 + i·s).
template <typename T, bool BILINEAR, bool HAS_SKIP, bool FUSED, int CB, bool STAGED>
__global__ void upsample_crop_add_kernel(const T* __restrict__ x, const float* __restrict__ weight,
                                         const T* __restrict__ skip,
                                         const float* __restrict__ skip_w,
                                         const float* __restrict__ skip_b, T* __restrict__ out,
                                         Geom g, int64_t cblocks, int64_t total, int pcols, int hp,
                                         int wp) {
  constexpr bool kFused = HAS_SKIP && FUSED;
  constexpr bool kScores = HAS_SKIP && !FUSED;
  const int64_t plane = g.h * g.w, kk = g.k * g.k, skip_plane = g.hs * g.ws;
  extern __shared__ float staged[];  // STAGED: 4 slices [C_in][C_out]
  int py0 = 0, px0 = 0;
  if (STAGED) {
    py0 = blockIdx.y / pcols;
    px0 = blockIdx.y % pcols;
    const Taps ty0 = deconv_taps((int)(py0 + g.oy), (int)g.s, (int)g.k, (int)g.h);
    const Taps tx0 = deconv_taps((int)(px0 + g.ox), (int)g.s, (int)g.k, (int)g.w);
    const int64_t cc = g.c * g.c;
    for (int tap = 0; tap < 4; ++tap) {
      const int64_t ky = (tap >> 1) ? ty0.k1 : ty0.k0, kx = (tap & 1) ? tx0.k1 : tx0.k0;
      for (int64_t i = threadIdx.x; i < cc; i += blockDim.x)  // i = ci·C + co
        staged[tap * cc + i] = weight[i * kk + ky * g.k + kx];
    }
    __syncthreads();
  }
  FCN_GRID_STRIDE_LOOP(idx, total) {
    int64_t xo, yo, c0, n;
    if (STAGED) {
      int64_t t = idx;
      const int64_t i = t % wp;
      t /= wp;
      const int64_t j = t % hp;
      t /= hp;
      c0 = (t % cblocks) * CB;
      n = t / cblocks;
      yo = py0 + j * g.s;
      xo = px0 + i * g.s;
      if (yo >= g.out_h || xo >= g.out_w) continue;  // this phase's grid is smaller than the largest
    } else if (total <= 0x7fffffff) {  // 32-bit index arithmetic when it fits (uniform branch)
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
      const PixelTaps t = pixel_taps(ty, tx, g.w);
#pragma unroll
      for (int m = 0; m < CB; ++m) {
        // Lanes past the last class compute a copy of it and are never stored.
        const int64_t ch = c0 + m < g.c ? c0 + m : g.c - 1;
        const T* p = x_img + ch * plane;
        acc[m] = depthwise_value(tap_value(p, t.o00, t.v00), f00, tap_value(p, t.o01, t.v01), f01,
                                 tap_value(p, t.o10, t.v10), f10, tap_value(p, t.o11, t.v11), f11);
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
        // W[ci, c0 + m, ky, kx] at wt[ci · ci_step + m · m_step]
        const float* wt = STAGED ? staged + (tap * g.c + 0) * g.c + c0
                                 : weight + (c0 * g.k + ky) * g.k + kx;
        const int64_t ci_step = STAGED ? g.c : g.c * kk, m_step = STAGED ? 1 : kk;
        for (int64_t ci = 0; ci < g.c; ++ci) {
          const float xv = to_float(xp[ci * plane]);
          const float* wc = wt + ci * ci_step;
#pragma unroll
          for (int m = 0; m < CB; ++m)
            if (c0 + m < g.c) acc[m] = mac(acc[m], xv, wc[m * m_step]);
        }
      }
    }

    const int64_t sy = yo + g.soy, sx = xo + g.sox;
    if (kFused) {
      float dot[CB];
#pragma unroll
      for (int m = 0; m < CB; ++m) dot[m] = 0.0f;
      const T* fp = skip + g.feature_index(n, 0, sy, sx);
      const int64_t f_step = g.skip_channels_last ? 1 : skip_plane;
      const float* wf = skip_w + c0 * g.f;
      for (int64_t f = 0; f < g.f; ++f) {
        const float fv = to_float(fp[f * f_step]);
#pragma unroll
        for (int m = 0; m < CB; ++m)
          if (c0 + m < g.c) dot[m] = mac(dot[m], fv, wf[m * g.f + f]);
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

// The launch for one dtype and case (dispatch_upsample_crop_add's Kernel).
template <typename T, bool BILINEAR, bool HAS_SKIP, bool FUSED>
struct UpsampleCropAdd {
  static void run(const UpsampleAddPtrs<T>& p, const Geom& g, cudaStream_t stream) {
    // Depthwise without scoring: one class per thread; otherwise 8 classes share each x / feature
    // load.
    constexpr int CB = (BILINEAR && !(HAS_SKIP && FUSED)) ? 1 : 8;
    const int64_t cblocks = (g.c + CB - 1) / CB;
    PhaseGrid pg;
    if (!BILINEAR && phase_grid(g.c, g.s, g.out_h, g.out_w, g.n * cblocks, pg)) {
      const int64_t total = g.n * cblocks * pg.hp * pg.wp;
      upsample_crop_add_kernel<T, BILINEAR, HAS_SKIP, FUSED, CB, true>
          <<<pg.grid, kThreads, pg.bytes, stream>>>(p.x, p.weight, p.skip, p.skip_w, p.skip_b,
                                                    p.out, g, cblocks, total, pg.pcols, pg.hp,
                                                    pg.wp);
      return;
    }
    const int64_t total = g.n * cblocks * g.out_h * g.out_w;
    upsample_crop_add_kernel<T, BILINEAR, HAS_SKIP, FUSED, CB, false>
        <<<grid_for(total), kThreads, 0, stream>>>(p.x, p.weight, p.skip, p.skip_w, p.skip_b,
                                                   p.out, g, cblocks, total, 1, 1, 1);
  }
};

void upsample_crop_add(const UpsampleAddArgs& args, uintptr_t stream) {
  dispatch_upsample_crop_add<UpsampleCropAdd>(args, as_stream(stream));
  check_launch("upsample_crop_add");
}

}  // namespace cuda
}  // namespace fcn

// upsample_crop_add: crop(convT(x, W, s), off, (H, W)) + crop(skip score, skip_off, (H, W)) in one
// pass over the output, float32 accumulation, the full transposed-conv map never materialised.
//
// * Depthwise (diagonal bilinear weight) without a scoring GEMM — upscore8/16/32, the big ones:
//   OpenMP over bands of output rows of one class plane. Column taps are tabulated once per call
//   (indices into a zero-padded input row, filter weights for every (ky, column)); each input row
//   is expanded to output columns once per band (the only gathers) and reused by the output rows
//   it feeds; the inner loop over x streams 4 values + 4 weights into fcn::depthwise_value.
// * Everything else, OpenMP over output rows (n, y), every class of a row in a float32 row
//   accumulator:
//   - learned (C×C) weight: the row is split by phase (x + ox) mod s; the pixels of one phase
//     share the kernel column, so each of the <= 4 taps is a GEMM  W[:, :, ky, kx]ᵀ (C_out ×
//     C_in) · x-row gather (C_in × pixels), run by a register-tiled micro-kernel (kMR classes ×
//     kNR pixels) over weights packed once per call and a per-row zero-padded input panel;
//   - depthwise with fused scoring: the taps as above, per row;
//   - fused skip: the 1×1 scoring GEMM  W_skip (C × F) · feat (F × pixels) with the same
//     micro-kernel over column chunks of the feature row; fcn::skip_score adds scale and bias.
// Summation orders (taps (0,0) (0,1) (1,0) (1,1), then C_in ascending; F ascending) are those of
// csrc/cuda/upsample_crop_add.cu, so both backends round alike.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/ops.h"
#include "upsample_crop_add.h"

FCN_NAMESPACE_BEGIN
namespace cpu {
namespace {

constexpr int kMR = 7;               // classes per register tile (21 VOC classes = 3 tiles)
constexpr int kNR = 16;              // pixels per register tile (vectorised)
constexpr int64_t kXChunk = 128;     // feature columns packed at a time (F × 128 floats)

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

using Geom = UpsampleAddGeom;

// tile[m][j] = Σ_t Σ_kk A_t[kk][m] · B_t[kk][j] (t, then kk ascending), A packed (K × kMR),
// B rows of NR floats at stride ldb. The accumulators stay in registers (auto-vectorised).
template <int NR>
inline void gemm_tile(int ntaps, const float* const* as, const float* const* bs, int64_t ldb,
                      int64_t K, float (&tile)[kMR][NR]) {
  float acc[kMR][NR];
  for (int m = 0; m < kMR; ++m)
    for (int j = 0; j < NR; ++j) acc[m][j] = 0.0f;
  for (int t = 0; t < ntaps; ++t) {
    const float* __restrict a = as[t];
    const float* __restrict b = bs[t];
    for (int64_t kk = 0; kk < K; ++kk, a += kMR, b += ldb) {
#pragma GCC unroll 16
      for (int m = 0; m < kMR; ++m) {
        const float am = a[m];
#pragma GCC unroll 16
        for (int j = 0; j < NR; ++j) acc[m][j] = mac(acc[m][j], b[j], am);
      }
    }
  }
  std::memcpy(tile, acc, sizeof(acc));
}

template <typename T>
inline void load_row(const T* __restrict src, int64_t count, float* __restrict dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = to_float(src[i]);
}

// Column tables of the bilinear path: for each output column, its two taps as indices into a
// zero-padded input row (pad[0] = 0, pad[1 + i] = x[i]; invalid taps read the pad) and the
// (clamped) kernel columns.
struct Columns {
  std::vector<int32_t> p0, p1, kx0, kx1;
};

Columns column_taps(const Geom& g) {
  Columns t;
  t.p0.resize(g.out_w), t.p1.resize(g.out_w), t.kx0.resize(g.out_w), t.kx1.resize(g.out_w);
  for (int64_t x = 0; x < g.out_w; ++x) {
    const Taps tx = deconv_taps((int)(x + g.ox), (int)g.s, (int)g.k, (int)g.w);
    t.p0[x] = tx.v0 ? tx.i0 + 1 : 0;
    t.p1[x] = tx.v1 ? tx.i1 + 1 : 0;
    t.kx0[x] = tx.k0;
    t.kx1[x] = tx.k1;
  }
  return t;
}

// Weights packed for the micro-kernel: for each kernel position (ky, kx) and class tile, the
// (C_in × kMR) panel W[ci, tile·kMR + m, ky, kx] (0 past the last class).
std::vector<float> pack_deconv_weight(const float* w, const Geom& g) {
  const int64_t tiles = (g.c + kMR - 1) / kMR, c = g.c, kk = g.k * g.k;
  std::vector<float> p(kk * tiles * c * kMR, 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t pos = 0; pos < kk; ++pos)
    for (int64_t tile = 0; tile < tiles; ++tile)
      for (int64_t ci = 0; ci < c; ++ci)
        for (int m = 0; m < kMR; ++m) {
          const int64_t co = tile * kMR + m;
          if (co < c) p[((pos * tiles + tile) * c + ci) * kMR + m] = w[(ci * c + co) * kk + pos];
        }
  return p;
}

// The 1×1 skip weight (C × F) packed per class tile as (F × kMR) panels.
std::vector<float> pack_skip_weight(const float* sw, const Geom& g) {
  const int64_t tiles = (g.c + kMR - 1) / kMR;
  std::vector<float> p(tiles * g.f * kMR, 0.0f);
  for (int64_t tile = 0; tile < tiles; ++tile)
    for (int64_t f = 0; f < g.f; ++f)
      for (int m = 0; m < kMR; ++m) {
        const int64_t co = tile * kMR + m;
        if (co < g.c) p[(tile * g.f + f) * kMR + m] = sw[co * g.f + f];
      }
  return p;
}

// Learned path, one output row of every class: acc[co·ldr + x] = Σ taps Σ_ci W·x.
template <typename T>
void learned_row(const T* x_img, const float* wpack, const Geom& g, int64_t y, float* acc,
                 int64_t ldr, float* panel) {
  const int64_t c = g.c, tiles = (c + kMR - 1) / kMR;
  const Taps ty = deconv_taps((int)(y + g.oy), (int)g.s, (int)g.k, (int)g.h);
  const int64_t iy[2] = {ty.i0, ty.i1}, ky[2] = {ty.k0, ty.k1};
  const bool vy[2] = {ty.v0, ty.v1};
  const int64_t phases = std::min(g.s, g.out_w);
  for (int64_t p = 0; p < phases; ++p) {
    // Pixels x = p + j·s; their full-map column X = p + ox + j·s has taps ix = b + j (kernel
    // column rx) and b + j − 1 (rx + s).
    const int64_t X0 = p + g.ox, rx = X0 % g.s, b = X0 / g.s;
    const int64_t nj = (g.out_w - p + g.s - 1) / g.s, ldb = round_up(nj, kNR);
    const float* as[4];
    const float* bs[4];
    int ntaps = 0;
    for (int a = 0; a < 2; ++a) {
      if (!vy[a]) continue;
      for (int tx = 0; tx < 2; ++tx) {
        const int64_t kx = rx + tx * g.s;
        if (kx >= g.k) continue;  // k < 2s: this tap never exists for the phase
        float* B = panel + (int64_t)ntaps * c * ldb;
        const int64_t base = b - tx;  // input column of pixel j: base + j
        const int64_t j0 = std::max<int64_t>(0, -base);
        const int64_t j1 = std::max<int64_t>(j0, std::min<int64_t>(nj, g.w - base));
        for (int64_t ci = 0; ci < c; ++ci) {
          float* dst = B + ci * ldb;
          const T* src = x_img + (ci * g.h + iy[a]) * g.w;
          for (int64_t j = 0; j < j0; ++j) dst[j] = 0.0f;
          for (int64_t j = j0; j < j1; ++j) dst[j] = to_float(src[base + j]);
          for (int64_t j = j1; j < ldb; ++j) dst[j] = 0.0f;
        }
        as[ntaps] = wpack + (ky[a] * g.k + kx) * tiles * c * kMR;
        bs[ntaps] = B;
        ++ntaps;
      }
    }
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const float* at[4];
      for (int t = 0; t < ntaps; ++t) at[t] = as[t] + tile * c * kMR;
      const int mr = (int)std::min<int64_t>(kMR, c - tile * kMR);
      for (int64_t j = 0; j < nj; j += kNR) {
        const float* bt[4];
        for (int t = 0; t < ntaps; ++t) bt[t] = bs[t] + j;
        float tl[kMR][kNR];
        gemm_tile(ntaps, at, bt, ldb, c, tl);
        const int nr = (int)std::min<int64_t>(kNR, nj - j);
        for (int m = 0; m < mr; ++m) {
          float* dst = acc + (tile * kMR + m) * ldr + p + j * g.s;
          for (int jj = 0; jj < nr; ++jj) dst[jj * g.s] = tl[m][jj];
        }
      }
    }
  }
}

// Fused skip, one output row of every class: acc[co·ldr + x] += skip_score(Σ_f W·feat).
template <typename T>
void fused_skip_row(const T* feat_img, const float* spack, const float* bias, const Geom& g,
                    int64_t y, float* acc, int64_t ldr, float* panel) {
  const int64_t c = g.c, tiles = (c + kMR - 1) / kMR;
  for (int64_t x0 = 0; x0 < g.out_w; x0 += kXChunk) {
    const int64_t nx = std::min(kXChunk, g.out_w - x0), ldb = round_up(nx, kNR);
    const T* first = feat_img + g.feature_index(0, 0, y + g.soy, x0 + g.sox);
    if (g.skip_channels_last) {  // a pixel's F features are contiguous: transposed into the panel
      for (int64_t j = 0; j < nx; ++j) {
        const T* __restrict src = first + j * g.f;
        for (int64_t f = 0; f < g.f; ++f) panel[f * ldb + j] = to_float(src[f]);
      }
    } else {
      for (int64_t f = 0; f < g.f; ++f) load_row(first + f * g.hs * g.ws, nx, panel + f * ldb);
    }
    for (int64_t f = 0; f < g.f; ++f)
      for (int64_t j = nx; j < ldb; ++j) panel[f * ldb + j] = 0.0f;
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const float* at = spack + tile * g.f * kMR;
      const int mr = (int)std::min<int64_t>(kMR, c - tile * kMR);
      for (int64_t j = 0; j < nx; j += kNR) {
        const float* bt = panel + j;
        float tl[kMR][kNR];
        gemm_tile(1, &at, &bt, ldb, g.f, tl);
        const int nr = (int)std::min<int64_t>(kNR, nx - j);
        for (int m = 0; m < mr; ++m) {
          const int64_t co = tile * kMR + m;
          const float bv = bias ? bias[co] : 0.0f;
          float* dst = acc + co * ldr + x0 + j;
          for (int jj = 0; jj < nr; ++jj) dst[jj] = dst[jj] + skip_score(tl[m][jj], g.scale, bv);
        }
      }
    }
  }
}

// out row = acc row (+ the skip score row), converted to T.
template <typename T, bool SCORES>
inline void store_row(const float* __restrict acc, const T* __restrict skip, int64_t count,
                      T* __restrict out) {
  if (SCORES) {
    for (int64_t x = 0; x < count; ++x) out[x] = from_float<T>(acc[x] + to_float(skip[x]));
  } else {
    for (int64_t x = 0; x < count; ++x) out[x] = from_float<T>(acc[x]);
  }
}

// Depthwise (diagonal bilinear) without a scoring GEMM: OpenMP over bands of output rows of one
// class plane. An input row's taps at every output column (x[iy, ix0(x)], x[iy, ix1(x)]: the only
// gathers) are expanded once per band and reused by the up to k output rows it feeds; the filter
// weights of every (ky, column) are tabulated once per call. The inner loop over x then streams
// 4 expanded values, 4 weights (and a skip score) per output.
template <typename T, bool SCORES>
void depthwise_kernel(const T* x, const float* filt, const T* skip, T* out, const Geom& g) {
  const int64_t W = g.out_w, ldr = round_up(W, kNR);
  const Columns cols = column_taps(g);
  // wt[(ky·2 + t)·W + x] = filt[ky, kx_t(x)]
  std::vector<float> wt(g.k * 2 * W);
  for (int64_t ky = 0; ky < g.k; ++ky)
    for (int64_t xo = 0; xo < W; ++xo) {
      wt[(ky * 2) * W + xo] = filt[ky * g.k + cols.kx0[xo]];
      wt[(ky * 2 + 1) * W + xo] = filt[ky * g.k + cols.kx1[xo]];
    }
  const int64_t band = std::max<int64_t>(16, 4 * g.s);
  const int64_t bands = (g.out_h + band - 1) / band, tasks = g.n * g.c * bands;

#pragma omp parallel
  {
    // Two expanded input rows (slots), each [ix0 taps | ix1 taps], and a zero row for missing
    // row taps; pad[0] = 0 is what invalid column taps read.
    std::vector<float> expanded(4 * ldr), zeros(2 * ldr, 0.0f), pad(g.w + 1, 0.0f);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t plane_id = task / bands, y0 = (task - plane_id * bands) * band;
      const int64_t y1 = std::min(g.out_h, y0 + band);
      const T* plane = x + plane_id * g.h * g.w;
      T* out_plane = out + plane_id * g.out_h * W;
      const T* skip_plane = SCORES ? skip + plane_id * g.hs * g.ws : nullptr;
      int64_t tag[2] = {-1, -1};  // input row held by each slot

      // The expanded taps of input row iy (valid: in a slot; invalid: zeros).
      auto row = [&](int64_t iy, bool valid, int64_t keep) -> const float* {
        if (!valid) return zeros.data();
        for (int sl = 0; sl < 2; ++sl)
          if (tag[sl] == iy) return expanded.data() + sl * 2 * ldr;
        const int sl = tag[0] == keep ? 1 : 0;  // never evict the row the other tap needs
        load_row(plane + iy * g.w, g.w, pad.data() + 1);
        float* __restrict e0 = expanded.data() + sl * 2 * ldr;
        float* __restrict e1 = e0 + ldr;
        const float* __restrict pd = pad.data();
        const int32_t* __restrict p0 = cols.p0.data();
        const int32_t* __restrict p1 = cols.p1.data();
        for (int64_t xo = 0; xo < W; ++xo) {
          e0[xo] = pd[p0[xo]];
          e1[xo] = pd[p1[xo]];
        }
        tag[sl] = iy;
        return e0;
      };

      for (int64_t y = y0; y < y1; ++y) {
        const Taps ty = deconv_taps((int)(y + g.oy), (int)g.s, (int)g.k, (int)g.h);
        const float* r0 = row(ty.i0, ty.v0, ty.v1 ? ty.i1 : -1);
        const float* r1 = row(ty.i1, ty.v1, ty.v0 ? ty.i0 : -1);
        const float* __restrict a0 = r0;         // x[iy0, ix0(x)]
        const float* __restrict b0 = r0 + ldr;   // x[iy0, ix1(x)]
        const float* __restrict a1 = r1;
        const float* __restrict b1 = r1 + ldr;
        const float* __restrict w00 = wt.data() + (ty.k0 * 2) * W;
        const float* __restrict w01 = w00 + W;
        const float* __restrict w10 = wt.data() + (ty.k1 * 2) * W;
        const float* __restrict w11 = w10 + W;
        T* __restrict o = out_plane + y * W;
        if (SCORES) {
          const T* __restrict sk = skip_plane + (y + g.soy) * g.ws + g.sox;
          for (int64_t xo = 0; xo < W; ++xo)
            o[xo] = from_float<T>(depthwise_value(a0[xo], w00[xo], b0[xo], w01[xo], a1[xo],
                                                  w10[xo], b1[xo], w11[xo]) + to_float(sk[xo]));
        } else {
          for (int64_t xo = 0; xo < W; ++xo)
            o[xo] = from_float<T>(depthwise_value(a0[xo], w00[xo], b0[xo], w01[xo], a1[xo],
                                                  w10[xo], b1[xo], w11[xo]));
        }
      }
    }
  }
}

// Every other case, one output row (n, y) of every class at a time: the learned path's phase
// GEMMs (or the depthwise taps) into a row accumulator, then the fused scoring GEMM, then the
// store (+ skip scores).
template <typename T, bool BILINEAR, bool HAS_SKIP, bool FUSED>
void row_kernel(const T* x, const float* weight, const T* skip, const float* skip_w,
                const float* skip_b, T* out, const Geom& g) {
  constexpr bool kFused = HAS_SKIP && FUSED;
  constexpr bool kScores = HAS_SKIP && !FUSED;
  const int64_t c = g.c, ldr = round_up(g.out_w, kNR);

  std::vector<float> wpack, spack;
  if (!BILINEAR) wpack = pack_deconv_weight(weight, g);
  if (kFused) spack = pack_skip_weight(skip_w, g);
  Columns cols;
  if (BILINEAR) cols = column_taps(g);
  const int64_t rows = g.n * g.out_h;
  const int64_t max_nj = (g.out_w + g.s - 1) / g.s;
  const int64_t learned_panel = BILINEAR ? 0 : 4 * c * round_up(max_nj, kNR);
  const int64_t skip_panel = kFused ? g.f * kXChunk : 0;

#pragma omp parallel
  {
    std::vector<float> acc(c * ldr);
    std::vector<float> panel(std::max(learned_panel, skip_panel));
    std::vector<float> wrow(BILINEAR ? 4 * g.out_w : 0);
    std::vector<float> pad(BILINEAR ? 2 * (g.w + 1) : 0, 0.0f);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = r / g.out_h, y = r - n * g.out_h;
      const T* x_img = x + n * c * g.h * g.w;
      T* out_row = out + n * c * g.out_h * g.out_w + y * g.out_w;

      if (BILINEAR) {
        const Taps ty = deconv_taps((int)(y + g.oy), (int)g.s, (int)g.k, (int)g.h);
        float* __restrict w00 = wrow.data();
        float* __restrict w01 = w00 + g.out_w;
        float* __restrict w10 = w01 + g.out_w;
        float* __restrict w11 = w10 + g.out_w;
        const float* f0 = weight + ty.k0 * g.k;
        const float* f1 = weight + ty.k1 * g.k;
        const int32_t* __restrict p0 = cols.p0.data();
        const int32_t* __restrict p1 = cols.p1.data();
        const int32_t* __restrict kx0 = cols.kx0.data();
        const int32_t* __restrict kx1 = cols.kx1.data();
        for (int64_t xo = 0; xo < g.out_w; ++xo) {
          w00[xo] = f0[kx0[xo]];
          w01[xo] = f0[kx1[xo]];
          w10[xo] = f1[kx0[xo]];
          w11[xo] = f1[kx1[xo]];
        }
        float* __restrict r0 = pad.data();  // [0] stays 0: the invalid taps' value
        float* __restrict r1 = r0 + g.w + 1;
        for (int64_t ch = 0; ch < c; ++ch) {
          const T* plane = x_img + ch * g.h * g.w;
          if (ty.v0) load_row(plane + (int64_t)ty.i0 * g.w, g.w, r0 + 1);
          else std::fill(r0 + 1, r0 + 1 + g.w, 0.0f);
          if (ty.v1) load_row(plane + (int64_t)ty.i1 * g.w, g.w, r1 + 1);
          else std::fill(r1 + 1, r1 + 1 + g.w, 0.0f);
          float* __restrict dst = acc.data() + ch * ldr;
          for (int64_t xo = 0; xo < g.out_w; ++xo) {
            const int32_t a = p0[xo], b = p1[xo];
            dst[xo] = depthwise_value(r0[a], w00[xo], r0[b], w01[xo], r1[a], w10[xo], r1[b],
                                      w11[xo]);
          }
        }
      } else {
        learned_row(x_img, wpack.data(), g, y, acc.data(), ldr, panel.data());
      }
      if (kFused)
        fused_skip_row(skip + n * g.f * g.hs * g.ws, spack.data(), skip_b, g, y, acc.data(), ldr,
                       panel.data());
      const T* score_row =
          kScores ? skip + n * c * g.hs * g.ws + (y + g.soy) * g.ws + g.sox : nullptr;
      for (int64_t ch = 0; ch < c; ++ch)
        store_row<T, kScores>(acc.data() + ch * ldr,
                              kScores ? score_row + ch * g.hs * g.ws : nullptr, g.out_w,
                              out_row + ch * g.out_h * g.out_w);
    }
  }
}

// The kernel for one dtype and case (dispatch_upsample_crop_add's Kernel).
template <typename T, bool BILINEAR, bool HAS_SKIP, bool FUSED>
struct UpsampleCropAdd {
  static void run(const UpsampleAddPtrs<T>& p, const Geom& g) {
    if (BILINEAR && !(HAS_SKIP && FUSED))
      depthwise_kernel<T, HAS_SKIP>(p.x, p.weight, p.skip, p.out, g);
    else
      row_kernel<T, BILINEAR, HAS_SKIP, FUSED>(p.x, p.weight, p.skip, p.skip_w, p.skip_b, p.out, g);
  }
};

}  // namespace

void upsample_crop_add(const UpsampleAddArgs& args) {
  dispatch_upsample_crop_add<UpsampleCropAdd>(args);
}

}  // namespace cpu
FCN_NAMESPACE_END

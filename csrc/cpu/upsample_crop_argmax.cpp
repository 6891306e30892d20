// upsample_crop_argmax: labels = argmax_c crop(convT(x, W, s), (oy, ox), (H, W)); the
// full-resolution logits are never stored (head-ops.md, op 2).
//
// Depthwise (diagonal bilinear) path. Output rows are processed in small groups that share their
// vertical taps (iy0 = (y + oy) / s, iy1 = iy0 - 1), over chunks of coarse columns. Inside a chunk
// the output columns are kept in phase-major order, [x mod s][x / s]: output column X = j·s + p
// reads coarse columns j (kernel index p) and j - 1 (index p + s), so for one phase p every column
// blend is the same two weights over contiguous input — no gathers anywhere. Per class, in
// increasing order:
//   1. the group's two coarse rows (zero-padded, converted to float) are blended horizontally into
//      h0[p][j], h1[p][j] (once per group when the filter is separable, per output row otherwise);
//   2. each output row blends h0 and h1 vertically and updates the running argmax (best, idx) of
//      the chunk — both contiguous, vectorised loops, in L1.
// The result equals fcn::deconv_value per pixel operation for operation (the CUDA kernel's form).
// Labels are written (phase-major → row-major) once, after the last class. Non-finite inputs:
// the pixels of chunks where one was seen are evaluated again one at a time by
// fcn::depthwise_argmax_pixel (the CUDA kernel's loop), which adds the spreading rule of
// fcn::spread_nonfinite.
//
// General (learned C×C) path: per output row and phase (output column mod s: same kernel column
// for all), blocks of 64 output pixels accumulate one class at a time in registers, over the valid
// taps and input classes (fcn::mac, the CUDA kernel's order), reading contiguous input rows; the
// running argmax takes each class as it completes. Pixels at the row's edges (a tap outside the
// input) take fcn::learned_argmax_pixel, the CUDA kernel's loop. W arrives as (k, k, C_in, C_out).
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/argmax_common.h"
#include "cpu/ops.h"
#include "dispatch.h"

FCN_NAMESPACE_BEGIN
namespace cpu {
namespace {

// Work items of the depthwise path: runs of at most max_rows output rows that share their
// vertical taps (iy0 = (y + oy) / s).
std::vector<RowRange> tap_groups(int64_t n, int out_h, int oy, int s, int max_rows) {
  std::vector<RowRange> items;
  for (int64_t img = 0; img < n; ++img)
    for (int y = 0; y < out_h;) {
      const int group = (y + oy) / s;
      const int end = std::min({out_h, (group + 1) * s - oy, y + max_rows});
      items.push_back({img, y, end});
      y = end;
    }
  return items;
}

constexpr int kGroupRows = 8;  // output rows per work item (at most s share their taps)
constexpr int kChunk = 1024;  // output columns per chunk (s × coarse columns, rounded down)

template <typename T, typename L>
void bilinear_argmax(const T* x, const float* filt, bool separable, int64_t n, int C, int h, int w,
                     int k, int s, int oy, int ox, int out_h, int out_w, L* labels, T* scores) {
  const int64_t hw = static_cast<int64_t>(h) * w;
  const int ixa = ox / s;                   // first coarse column j = 0 of the phase-major grid
  const int nb = (ox + out_w - 1) / s - ixa + 1;  // coarse columns covering the crop
  const int jt = std::max(1, kChunk / s);   // coarse columns per chunk
  const std::vector<RowRange> items = tap_groups(n, out_h, oy, s, kGroupRows);
  const int64_t n_items = static_cast<int64_t>(items.size());
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // Where output column x sits in its chunk's phase-major arrays.
  std::vector<int> e_of_x(out_w);
  for (int xo = 0; xo < out_w; ++xo) {
    const int X = xo + ox, q = X / s, j = q - ixa, j0 = j - j % jt;
    e_of_x[xo] = (X - q * s) * std::min(jt, nb - j0) + (j - j0);
  }

#pragma omp parallel
  {
    const int cap = s * jt;
    std::vector<float> best(static_cast<size_t>(kGroupRows) * cap), h0(cap), h1(cap),
        zeros(std::max(cap, jt + 1), 0.0f), r0(jt + 1), r1(jt + 1);
    std::vector<int> idx(static_cast<size_t>(kGroupRows) * cap);
    std::vector<float> wy0(kGroupRows), wy1(kGroupRows);
    std::vector<int> ky0(kGroupRows), ky1(kGroupRows);
    std::vector<char> vy0(kGroupRows), vy1(kGroupRows);

    // Horizontal blend of padded row `r` (r[jj] is coarse column ixa + j0 - 1 + jj) with the
    // weights of kernel row ky: out[p][jj] for phases p < s. Returns whether all are finite.
    auto horizontal = [&](const float* r, int ky, float* out, int jw) {
      uint32_t exp_max = 0;
      for (int p = 0; p < s; ++p) {
        const bool va = p < k, vb = p + s < k;
        const float wa = deconv_col_weight(filt, separable, k, va, ky, p);
        const float wb = deconv_col_weight(filt, separable, k, vb, ky, p + s);
        const float* a = va ? r + 1 : zeros.data();
        const float* b = vb ? r : zeros.data();
        float* o = out + static_cast<int64_t>(p) * jw;
        for (int jj = 0; jj < jw; ++jj) {
          o[jj] = blend2(wa, a[jj], wb, b[jj]);
          exp_max = std::max(exp_max, float_to_bits(o[jj]) & 0x7f800000u);
        }
      }
      return exp_max != 0x7f800000u;
    };

#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; ++it) {
      const RowRange rr = items[it];
      const int rows = rr.y1 - rr.y0;
      const int iy0 = (rr.y0 + oy) / s, iy1 = iy0 - 1;  // unclamped; validity per row below
      const T* xn = x + rr.n * C * hw;
      for (int r = 0; r < rows; ++r) {
        const Taps ty = deconv_taps(rr.y0 + r + oy, s, k, h);
        vy0[r] = ty.v0;
        vy1[r] = ty.v1;
        wy0[r] = deconv_row_weight(filt, separable, ty.v0, ty.k0);
        wy1[r] = deconv_row_weight(filt, separable, ty.v1, ty.k1);
        ky0[r] = ty.k0;
        ky1[r] = ty.k1;
      }
      const bool row0_in = iy0 >= 0 && iy0 < h, row1_in = iy1 >= 0 && iy1 < h;

      for (int j0 = 0; j0 < nb; j0 += jt) {
        const int jw = std::min(jt, nb - j0);
        const int e_n = s * jw;
        for (int r = 0; r < rows; ++r) {
          std::fill_n(best.data() + static_cast<int64_t>(r) * cap, e_n, neg_inf);
          std::fill_n(idx.data() + static_cast<int64_t>(r) * cap, e_n, 0);
        }
        // Coarse columns ixa + j0 - 1 ... ixa + j0 + jw - 1 (zero outside the input).
        const int c_lo = ixa + j0 - 1;
        const int in_lo = std::max(c_lo, 0), in_hi = std::min(c_lo + jw, w - 1);
        bool nonfinite = false;

        for (int c = 0; c < C; ++c) {
          const T* plane = xn + c * hw;
          auto load = [&](int iy, bool in, float* dst) {
            std::fill_n(dst, jw + 1, 0.0f);
            if (!in) return;
            const T* src = plane + static_cast<int64_t>(iy) * w;
            uint32_t exp_max = 0;  // all-ones exponent: inf or NaN (a vectorisable max)
            for (int ix = in_lo; ix <= in_hi; ++ix) {
              const float v = to_float(src[ix]);
              dst[ix - c_lo] = v;
              exp_max = std::max(exp_max, float_to_bits(v) & 0x7f800000u);
            }
            nonfinite |= exp_max == 0x7f800000u;
          };
          load(iy0, row0_in, r0.data());
          load(iy1, row1_in, r1.data());
          bool finite = true;
          if (separable)  // the weights do not depend on the kernel row
            finite = horizontal(r0.data(), 0, h0.data(), jw) &
                     horizontal(r1.data(), 0, h1.data(), jw);
          for (int r = 0; r < rows; ++r) {
            if (!separable)
              finite = horizontal(r0.data(), ky0[r], h0.data(), jw) &
                       horizontal(r1.data(), ky1[r], h1.data(), jw);
            const float* a = vy0[r] ? h0.data() : zeros.data();
            const float* b = vy1[r] ? h1.data() : zeros.data();
            const float w0 = wy0[r], w1 = wy1[r];
            float* bst = best.data() + static_cast<int64_t>(r) * cap;
            int* ix = idx.data() + static_cast<int64_t>(r) * cap;
            if (finite)
              blend_argmax_strip<true>(a, b, w0, w1, c, e_n, bst, ix);
            else
              blend_argmax_strip<false>(a, b, w0, w1, c, e_n, bst, ix);
          }
        }

        // Write the chunk's output columns X = x + ox in [(ixa + j0)·s, (ixa + j0 + jw)·s).
        const int x_lo = std::max(0, (ixa + j0) * s - ox);
        const int x_hi = std::min(out_w, (ixa + j0 + jw) * s - ox);
        for (int r = 0; r < rows; ++r) {
          const int y = rr.y0 + r;
          const int64_t out_row = (rr.n * out_h + y) * static_cast<int64_t>(out_w);
          const float* bst = best.data() + static_cast<int64_t>(r) * cap;
          const int* ix = idx.data() + static_cast<int64_t>(r) * cap;
          if (!(nonfinite && C > 1)) {
            for (int xo = x_lo; xo < x_hi; ++xo)
              labels[out_row + xo] = static_cast<L>(ix[e_of_x[xo]]);
            if (scores)
              for (int xo = x_lo; xo < x_hi; ++xo)
                scores[out_row + xo] = from_float<T>(bst[e_of_x[xo]]);
            continue;
          }
          // A non-finite input in the chunk: every pixel again, one at a time, with the spreading.
          const Taps ty = deconv_taps(y + oy, s, k, h);
          for (int xo = x_lo; xo < x_hi; ++xo) {
            const Taps tx = deconv_taps(xo + ox, s, k, w);
            const PixelTaps t = pixel_taps(ty, tx, w);
            float bv;
            int bi;
            depthwise_argmax_pixel(xn, hw, C, t, deconv_weights(filt, separable, k, ty, tx, t), bv,
                                   bi);
            labels[out_row + xo] = static_cast<L>(bi);
            if (scores) scores[out_row + xo] = from_float<T>(bv);
          }
        }
      }
    }
  }
}

// out[lane] = Σ over taps i, input classes ci of x_i[ci·w + lane]·w_i[ci·C], in that order
// (fcn::mac), for NV·16 consecutive pixels of one phase: the sums stay in registers.
template <int NV>
inline void learned_block(const float* const* xs, const float* const* ws, int n_taps, int C,
                          int w, float* out) {
  constexpr int kRegs = NV * 16 / kRegLanes;
  vreg acc[kRegs];
  for (int v = 0; v < kRegs; ++v) acc[v] = vreg{};
  for (int i = 0; i < n_taps; ++i) {
    const float* xr = xs[i];
    const float* wc = ws[i];
    for (int ci = 0; ci < C; ++ci, xr += w) {
      const float wv = wc[static_cast<int64_t>(ci) * C];
      for (int v = 0; v < kRegs; ++v) {
        vreg xv;
        std::memcpy(&xv, xr + kRegLanes * v, sizeof(xv));
        acc[v] = mac(acc[v], xv, wv);
      }
    }
  }
  std::memcpy(out, acc, sizeof(acc));
}

template <typename T, typename L>
void general_argmax(const T* x, const float* wt, int64_t n, int C, int h, int w, int k, int s,
                    int oy, int ox, int out_h, int out_w, L* labels, T* scores) {
  const int64_t hw = static_cast<int64_t>(h) * w;
  const int64_t rows_total = n * out_h;
  const int64_t tap_stride = static_cast<int64_t>(C) * C;  // one (ky, kx) slice of W
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int phases = std::min(s, out_w);

#pragma omp parallel
  {
    // The (at most two) coarse rows of an output row, as float: rows[a][ci·wp + ix]. The padding
    // lets the last vector block read past the row into lanes that are then ignored.
    const int wp = w + 16;
    std::vector<float> rows_f(2 * static_cast<size_t>(C) * wp + 16, 0.0f);
    std::vector<float> best(out_w / s + 2);
    std::vector<int> idx(out_w / s + 2);

#pragma omp for schedule(dynamic, 1)
    for (int64_t row = 0; row < rows_total; ++row) {
      const int64_t img = row / out_h;
      const int y = static_cast<int>(row - img * out_h);
      const T* xn = x + img * C * hw;
      const Taps ty = deconv_taps(y + oy, s, k, h);
      const bool vy[2] = {ty.v0, ty.v1};
      const int iy[2] = {ty.i0, ty.i1}, ky[2] = {ty.k0, ty.k1};
      for (int a = 0; a < 2; ++a) {
        if (!vy[a]) continue;
        float* dst = rows_f.data() + static_cast<int64_t>(a) * C * wp;
        for (int ci = 0; ci < C; ++ci) {
          const T* src = xn + ci * hw + static_cast<int64_t>(iy[a]) * w;
          float* d = dst + static_cast<int64_t>(ci) * wp;
          for (int ix = 0; ix < w; ++ix) d[ix] = to_float(src[ix]);
        }
      }
      const int64_t out_row = row * out_w;

      // Output columns of one phase share their kernel columns: x = x0 + m·s reads coarse columns
      // j = j0 + m (kernel column kx0 = p) and j - 1 (kx1 = p + s).
      for (int x0 = 0; x0 < phases; ++x0) {
        const int p = (x0 + ox) % s, j0 = (x0 + ox) / s;
        const int m_n = (out_w - x0 + s - 1) / s;
        // Taps (row a, column b) whose kernel index is valid for this phase.
        int n_taps = 0, tap_a[4], tap_b[4];
        const bool kx_ok[2] = {p < k, p + s < k};
        for (int t = 0; t < 4; ++t)
          if (vy[t >> 1] && kx_ok[t & 1]) tap_a[n_taps] = t >> 1, tap_b[n_taps++] = t & 1;
        // Interior: every such tap's column in [0, w) (j < w for b = 0, j >= 1 for b = 1).
        bool need_a = false, need_b = false;
        for (int i = 0; i < n_taps; ++i) (tap_b[i] ? need_b : need_a) = true;
        const int m_lo = std::min(m_n, std::max(0, need_b ? 1 - j0 : 0));
        const int m_hi = std::max(m_lo, std::min(m_n, need_a ? w - j0 : m_n));
        std::fill_n(best.data(), m_n, neg_inf);
        std::fill_n(idx.data(), m_n, 0);

        for (int co = 0; co < C; ++co) {
          const float* xs[4];
          const float* ws[4];
          for (int i = 0; i < n_taps; ++i)
            ws[i] = wt + static_cast<int64_t>(ky[tap_a[i]] * k + p + tap_b[i] * s) * tap_stride +
                    co;
          float acc[64];
          for (int m0 = m_lo; m0 < m_hi;) {
            for (int i = 0; i < n_taps; ++i)
              xs[i] = rows_f.data() + static_cast<int64_t>(tap_a[i]) * C * wp + j0 + m0 - tap_b[i];
            const int lanes = std::min(64, m_hi - m0);
            switch ((lanes + 15) / 16) {
              case 4: learned_block<4>(xs, ws, n_taps, C, wp, acc); break;
              case 3: learned_block<3>(xs, ws, n_taps, C, wp, acc); break;
              case 2: learned_block<2>(xs, ws, n_taps, C, wp, acc); break;
              default: learned_block<1>(xs, ws, n_taps, C, wp, acc); break;
            }
            for (int l = 0; l < lanes; ++l) argmax_update(acc[l], co, best[m0 + l], idx[m0 + l]);
            m0 += lanes;
          }
        }
        // Edge pixels (a tap's column outside the input: no term at all), one at a time.
        for (int m = 0; m < m_n; ++m) {
          if (m >= m_lo && m < m_hi) continue;
          const Taps tx = deconv_taps(x0 + m * s + ox, s, k, w);
          learned_argmax_pixel(xn, hw, w, wt, C, k, ty, tx, best[m], idx[m]);
        }
        for (int m = 0; m < m_n; ++m) {
          const int64_t o = out_row + x0 + static_cast<int64_t>(m) * s;
          labels[o] = static_cast<L>(idx[m]);
          if (scores) scores[o] = from_float<T>(best[m]);
        }
      }
    }
  }
}

}  // namespace

void upsample_crop_argmax(uintptr_t x, uintptr_t weight, int weight_kind, int64_t n, int64_t c,
                          int64_t h, int64_t w, int64_t k, int64_t s, int64_t oy, int64_t ox,
                          int64_t out_h, int64_t out_w, uintptr_t labels, int label_dtype,
                          uintptr_t scores, int dtype) {
  if (n == 0 || out_h == 0 || out_w == 0) return;
  const float* wts = reinterpret_cast<const float*>(weight);
  FCN_DISPATCH_FLOAT(dtype, T,
    FCN_DISPATCH_ARGMAX_LABEL(label_dtype, L, {
      const T* xp = reinterpret_cast<const T*>(x);
      L* lp = reinterpret_cast<L*>(labels);
      T* sp = reinterpret_cast<T*>(scores);
      if (weight_kind == kLearned)
        general_argmax<T, L>(xp, wts, n, (int)c, (int)h, (int)w, (int)k, (int)s, (int)oy, (int)ox,
                             (int)out_h, (int)out_w, lp, sp);
      else
        bilinear_argmax<T, L>(xp, wts, weight_kind == kBilinearSeparable, n, (int)c, (int)h,
                              (int)w, (int)k, (int)s, (int)oy, (int)ox, (int)out_h, (int)out_w, lp,
                              sp);
    }));
}

}  // namespace cpu
FCN_NAMESPACE_END

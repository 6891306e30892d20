// interp_argmax: labels = argmax_c F.interpolate(x, (H, W), bilinear, align_corners=False), the
// interpolated logits never stored (head-ops.md, op 3).
//
// Source indices and weights come from fcn::interp_source (PyTorch's rule; the float32 scale is
// computed in Python), per output column once and per output row once. Work items are strips of
// output rows, over chunks of output columns. Per class, in increasing order: each source row the
// strip reads is blended horizontally once (with upsampling, one source row serves many output
// rows; blocks of 16 output columns reading < 16 source columns take their two sources by register
// permutes, others gather through the column table), then every output row blends its two rows
// vertically and updates the running argmax of the chunk (contiguous, vectorised). That is
// fcn::interp_value's arithmetic operation for operation (see fcn::blend2), so the labels and
// scores equal the CUDA kernel's. A zero weight still multiplies its input, as in PyTorch.

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

constexpr int kStripRows = 16;  // output rows per work item
constexpr int kChunk = 512;     // output columns per chunk (a multiple of 16)

// A 16-lane permute with a runtime index vector is one instruction with AVX-512 (GCC's
// __builtin_shuffle); narrower levels and other compilers take the gather loop for every column.
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
constexpr bool kHavePermute = true;
#define FCN_PERMUTE16(v, idx) __builtin_shuffle(v, idx)
#else
constexpr bool kHavePermute = false;
#define FCN_PERMUTE16(v, idx) (v)
#endif

template <typename T, typename L>
void interp_kernel(const T* x, int64_t n, int C, int h, int w, int out_h, int out_w, float scale_h,
                   float scale_w, L* labels, T* scores) {
  const int64_t hw = static_cast<int64_t>(h) * w;
  std::vector<Interp> ry(out_h);
  for (int y = 0; y < out_h; ++y) ry[y] = interp_source(y, h, out_h, scale_h);
  std::vector<int> cx0(out_w), cx1(out_w);
  std::vector<float> cl0(out_w), cl1(out_w);
  for (int xo = 0; xo < out_w; ++xo) {
    const Interp t = interp_source(xo, w, out_w, scale_w);
    cx0[xo] = t.i0;
    cx1[xo] = t.i1;
    cl0[xo] = t.l0;
    cl1[xo] = t.l1;
  }
  std::vector<RowRange> items;
  for (int64_t img = 0; img < n; ++img)
    for (int y = 0; y < out_h; y += kStripRows)
      items.push_back({img, y, std::min(out_h, y + kStripRows)});
  const int64_t n_items = static_cast<int64_t>(items.size());
  const float neg_inf = -std::numeric_limits<float>::infinity();

#pragma omp parallel
  {
    // Blended source rows of a strip: at most two per output row.
    std::vector<float> best(static_cast<size_t>(kStripRows) * kChunk),
        hrow(static_cast<size_t>(2 * kStripRows) * kChunk), src(w + 16, 0.0f);
    std::vector<int> idx(static_cast<size_t>(kStripRows) * kChunk), c0(kChunk), c1(kChunk);
    // Per block of 16 output columns whose sources span < 16 columns (upsampling): the first
    // source column, and each column's two sources relative to it (a register permute, no gather).
    std::vector<int> blk_base(kChunk / 16);
    std::vector<ivec16> blk_r0(kChunk / 16), blk_r1(kChunk / 16);
    std::vector<int> used, slot0(kStripRows), slot1(kStripRows);
    std::vector<char> finite(2 * kStripRows);

#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; ++it) {
      const RowRange rr = items[it];
      const int rows = rr.y1 - rr.y0;
      // The strip's distinct source rows (ascending: the row map is monotonic) and each output
      // row's two slots among them.
      used.clear();
      auto slot_of = [&](int iy) {  // i0 <= i1, both nondecreasing in y: iy is new or recent
        int u = static_cast<int>(used.size()) - 1;
        while (u >= 0 && used[u] > iy) --u;
        if (u >= 0 && used[u] == iy) return u;
        used.push_back(iy);  // iy > used.back() here
        return static_cast<int>(used.size()) - 1;
      };
      for (int r = 0; r < rows; ++r) {
        const Interp& t = ry[rr.y0 + r];
        slot0[r] = slot_of(t.i0);
        slot1[r] = slot_of(t.i1);
      }
      const T* xn = x + rr.n * C * hw;
      for (int x0 = 0; x0 < out_w; x0 += kChunk) {
        const int cw = std::min(kChunk, out_w - x0);
        // Source columns of the chunk (monotonic in x), rebased to the loaded range.
        const int lo = cx0[x0], hi = cx1[x0 + cw - 1];
        for (int i = 0; i < cw; ++i) {
          c0[i] = cx0[x0 + i] - lo;
          c1[i] = cx1[x0 + i] - lo;
        }
        const float* l0 = cl0.data() + x0;
        const float* l1 = cl1.data() + x0;
        int n_perm = 0;  // leading blocks served by permutes
        for (; kHavePermute && n_perm < cw / 16; ++n_perm) {
          const int i0 = n_perm * 16, base = c0[i0];
          if (c1[i0 + 15] - base >= 16) break;
          blk_base[n_perm] = base;
          for (int l = 0; l < 16; ++l) {
            blk_r0[n_perm][l] = c0[i0 + l] - base;
            blk_r1[n_perm][l] = c1[i0 + l] - base;
          }
        }
        for (int r = 0; r < rows; ++r) {
          std::fill_n(best.data() + static_cast<int64_t>(r) * kChunk, cw, neg_inf);
          std::fill_n(idx.data() + static_cast<int64_t>(r) * kChunk, cw, 0);
        }
        for (int c = 0; c < C; ++c) {
          const T* plane = xn + c * hw;
          // Horizontal pass: each source row once per class (shared by the output rows reading it).
          for (size_t u = 0; u < used.size(); ++u) {
            const T* s_row = plane + static_cast<int64_t>(used[u]) * w + lo;
            float* sr = src.data();
            for (int i = 0; i <= hi - lo; ++i) sr[i] = to_float(s_row[i]);
            float* out = hrow.data() + static_cast<int64_t>(u) * kChunk;
            for (int b = 0; b < n_perm; ++b) {  // reads up to 15 columns past hi: padding
              vec16 s16, w0, w1;
              std::memcpy(&s16, sr + blk_base[b], sizeof(s16));
              std::memcpy(&w0, l0 + 16 * b, sizeof(w0));
              std::memcpy(&w1, l1 + 16 * b, sizeof(w1));
              const vec16 v = blend2(w0, FCN_PERMUTE16(s16, blk_r0[b]), w1,
                                     FCN_PERMUTE16(s16, blk_r1[b]));
              std::memcpy(out + 16 * b, &v, sizeof(v));
            }
            for (int i = 16 * n_perm; i < cw; ++i)
              out[i] = blend2(l0[i], sr[c0[i]], l1[i], sr[c1[i]]);
            uint32_t exp_max = 0;
            for (int i = 0; i < cw; ++i)
              exp_max = std::max(exp_max, float_to_bits(out[i]) & 0x7f800000u);
            finite[u] = exp_max != 0x7f800000u;
          }
          // Vertical pass and the running argmax.
          for (int r = 0; r < rows; ++r) {
            const Interp& t = ry[rr.y0 + r];
            const float w0 = t.l0, w1 = t.l1;
            const float* a = hrow.data() + static_cast<int64_t>(slot0[r]) * kChunk;
            const float* b = hrow.data() + static_cast<int64_t>(slot1[r]) * kChunk;
            float* bst = best.data() + static_cast<int64_t>(r) * kChunk;
            int* ix = idx.data() + static_cast<int64_t>(r) * kChunk;
            if (finite[slot0[r]] && finite[slot1[r]])
              blend_argmax_strip<true>(a, b, w0, w1, c, cw, bst, ix);
            else
              blend_argmax_strip<false>(a, b, w0, w1, c, cw, bst, ix);
          }
        }
        for (int r = 0; r < rows; ++r) {
          const int64_t out_row = (rr.n * out_h + rr.y0 + r) * static_cast<int64_t>(out_w) + x0;
          const float* bst = best.data() + static_cast<int64_t>(r) * kChunk;
          const int* ix = idx.data() + static_cast<int64_t>(r) * kChunk;
          for (int i = 0; i < cw; ++i) labels[out_row + i] = static_cast<L>(ix[i]);
          if (scores)
            for (int i = 0; i < cw; ++i) scores[out_row + i] = from_float<T>(bst[i]);
        }
      }
    }
  }
}

}  // namespace

void interp_argmax(uintptr_t x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h,
                   int64_t out_w, float scale_h, float scale_w, uintptr_t labels, int label_dtype,
                   uintptr_t scores, int dtype) {
  if (n == 0 || out_h == 0 || out_w == 0) return;
  FCN_DISPATCH_FLOAT(dtype, T,
    FCN_DISPATCH_ARGMAX_LABEL(label_dtype, L,
      interp_kernel<T, L>(reinterpret_cast<const T*>(x), n, (int)c, (int)h, (int)w, (int)out_h,
                          (int)out_w, scale_h, scale_w, reinterpret_cast<L*>(labels),
                          reinterpret_cast<T*>(scores))));
}

}  // namespace cpu
FCN_NAMESPACE_END

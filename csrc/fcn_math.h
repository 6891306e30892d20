// Per-pixel arithmetic of the FCN head ops, shared by the C++ CPU kernels (csrc/cpu) and the CUDA
// kernels (csrc/cuda): the same inline functions compile for host and device, so the CPU tests
// exercise the GPU's arithmetic. The Triton kernels (kernels/common.py) follow the same rules.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FCN_HD __host__ __device__ __forceinline__
#define FCN_UNROLL _Pragma("unroll")
#else
#define FCN_HD inline
#define FCN_UNROLL
#endif

// The CPU module compiles its kernels once per instruction-set level (setup.py, cpu/capability.h)
// and links the copies into one library. Each copy's code lives in its own inline namespace
// (FCN_CPU_CAPABILITY = cpu_default, cpu_avx2, ...: fcn::cpu_avx2::to_float), so that an inline
// function the linker keeps once can never be one level's copy called from another level's code
// (an AVX-512 helper on an AVX2 machine, or a 64-byte vector argument passed in registers to a copy
// that expects it in memory). Everywhere else — the CUDA module, the CPU module's dispatcher and
// bindings — this is plain namespace fcn. Types that cross from the dispatcher into a level's code
// (the argument structs, the kernel table) are declared outside it, in plain fcn.
#if defined(FCN_CPU_CAPABILITY)
#define FCN_NAMESPACE_BEGIN namespace fcn { inline namespace FCN_CPU_CAPABILITY {
#define FCN_NAMESPACE_END } }
#else
#define FCN_NAMESPACE_BEGIN namespace fcn {
#define FCN_NAMESPACE_END }
#endif

FCN_NAMESPACE_BEGIN

// dtype codes passed from Python (fcnfast/ops/native.py's DTYPE_CODE keeps the same table).
enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kU8 = 3, kI32 = 4, kI64 = 5 };

// 16-bit storage types; the conversions below are bit arithmetic, identical on host and device.
struct half_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

FCN_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

FCN_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

// With F16C the host converts in hardware (vcvtph2ps / vcvtps2ph: the same IEEE rounding as the
// bit arithmetic below, checked bit for bit, and vectorisable); the device and other hosts use the
// bit arithmetic.
#if !defined(__CUDACC__) && !defined(FCN_NO_HOST_F16) && defined(__F16C__) && defined(__FLT16_MAX__)
#define FCN_HOST_F16 1
#endif

// IEEE binary16 → float (exact: every half is a float).
FCN_HD float half_to_float(uint16_t h) {
#if defined(FCN_HOST_F16)
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return (float)v;
#endif
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / NaN
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);  // ±0
    // subnormal: normalise
    int e = -1;
    do { man <<= 1; ++e; } while ((man & 0x400u) == 0);
    man &= 0x3ffu;
    return bits_to_float(sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13));
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// float → IEEE binary16, round to nearest even; overflow → inf, NaN stays NaN.
FCN_HD uint16_t float_to_half(float f) {
#if defined(FCN_HOST_F16)
  const _Float16 v = (_Float16)f;
  uint16_t bits;
  std::memcpy(&bits, &v, 2);
  return bits;
#endif
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return sign;  // < 2^-25 rounds to 0
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return (uint16_t)(sign | r);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 → 15 (in place)
  const uint32_t rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return (uint16_t)(sign | r);
}

FCN_HD float bf16_to_float(uint16_t b) { return bits_to_float((uint32_t)b << 16); }

// float → bfloat16, round to nearest even; NaN stays a quiet NaN.
// bf16_rounded_bits: on a float's bits, in the low 16 bits; U is uint32_t or a CPU kernel's
// vector of them (csrc/cpu/simd.h), lane by lane.
template <typename U> FCN_HD U bf16_rounded_bits(U u) {
  return (u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

FCN_HD uint16_t float_to_bf16(float f) { return (uint16_t)bf16_rounded_bits(float_to_bits(f)); }

FCN_HD float to_float(float v) { return v; }
FCN_HD float to_float(half_t v) { return half_to_float(v.bits); }
FCN_HD float to_float(bf16_t v) { return bf16_to_float(v.bits); }

template <typename T> FCN_HD T from_float(float v);
template <> FCN_HD float from_float<float>(float v) { return v; }
template <> FCN_HD half_t from_float<half_t>(float v) { return half_t{float_to_half(v)}; }
template <> FCN_HD bf16_t from_float<bf16_t>(float v) { return bf16_t{float_to_bf16(v)}; }

FCN_HD bool is_nan(float v) { return v != v; }
FCN_HD bool is_finite(float v) { return (float_to_bits(v) & 0x7f800000u) != 0x7f800000u; }

// --- transposed convolution taps ---------------------------------------------------------------
// full[o] = Σ_i in[i]·w[o − i·s] over 0 <= o − i·s < k. With k <= 2s only i0 = o / s (kernel index
// o − i0·s < s) and i0 − 1 (index + s) can contribute. Invalid taps get in-range indices.
struct Taps {
  int i0, k0, i1, k1;
  bool v0, v1;
};

FCN_HD Taps deconv_taps(int o, int s, int k, int n_in) {
  Taps t;
  t.i0 = o / s;
  t.k0 = o - t.i0 * s;
  t.v0 = t.i0 < n_in && t.k0 < k;
  t.i1 = t.i0 - 1;
  t.k1 = t.k0 + s;
  t.v1 = t.i1 >= 0 && t.k1 < k;
  if (t.i0 > n_in - 1) t.i0 = n_in - 1;
  if (t.i1 < 0) t.i1 = 0;
  if (t.k0 > k - 1) t.k0 = k - 1;
  if (t.k1 > k - 1) t.k1 = k - 1;
  return t;
}

// The 2×2 taps of one output pixel in an input plane of width w, in the order (iy0, ix0),
// (iy0, ix1), (iy1, ix0), (iy1, ix1): offsets (in range even for an invalid tap) and validity.
struct PixelTaps {
  int64_t o00, o01, o10, o11;
  bool v00, v01, v10, v11;
};

FCN_HD PixelTaps pixel_taps(const Taps& ty, const Taps& tx, int64_t w) {
  PixelTaps t;
  t.o00 = (int64_t)ty.i0 * w + tx.i0;
  t.o01 = (int64_t)ty.i0 * w + tx.i1;
  t.o10 = (int64_t)ty.i1 * w + tx.i0;
  t.o11 = (int64_t)ty.i1 * w + tx.i1;
  t.v00 = ty.v0 && tx.v0;
  t.v01 = ty.v0 && tx.v1;
  t.v10 = ty.v1 && tx.v0;
  t.v11 = ty.v1 && tx.v1;
  return t;
}

// A tap's input as float, 0 for an invalid tap.
template <typename T>
FCN_HD float tap_value(const T* plane, int64_t offset, bool valid) {
  return valid ? to_float(plane[offset]) : 0.0f;
}

// --- upsample_crop_add -------------------------------------------------------------------------
// Depthwise (diagonal bilinear) value of one output pixel: its taps x·filt summed in the order
// (iy0, ix0), (iy0, ix1), (iy1, ix0), (iy1, ix1); an invalid tap passes x = 0.
FCN_HD float depthwise_value(float x00, float f00, float x01, float f01, float x10, float f10,
                             float x11, float f11) {
  float v = x00 * f00;
  v = v + x01 * f01;
  v = v + x10 * f10;
  v = v + x11 * f11;
  return v;
}

// Fused 1×1 skip score from dot = Σ_f W[c, f]·feat[f] (f ascending, float32): bias + scale·dot.
// (The reference scales the features first; equal up to rounding.) No bias: bias = 0.
FCN_HD float skip_score(float dot, float scale, float bias) { return dot * scale + bias; }

// --- argmax ------------------------------------------------------------------------------------
// torch.argmax's rule with classes visited in increasing order: a strictly larger score wins (ties
// keep the lowest index); the first NaN wins and stays. Start from best = -inf, idx = 0.
FCN_HD void argmax_update(float v, int c, float& best, int& best_idx) {
  if (v > best || (is_nan(v) && !is_nan(best))) {
    best = v;
    best_idx = c;
  }
}

// --- bilinear interpolation, align_corners=False (PyTorch's upsample_bilinear2d) ---------------
// scale = float(in) / float(out); src = max(scale·(dst + 0.5) − 0.5, 0); i1 = i0 + (i0 < in − 1);
// equal sizes copy (PyTorch's CPU kernel special case).
struct Interp {
  int i0, i1;
  float l0, l1;
};

FCN_HD Interp interp_source(int dst, int n_in, int n_out, float scale) {
  Interp r;
  if (n_in == n_out) {
    r.i0 = r.i1 = dst;
    r.l0 = 1.0f;
    r.l1 = 0.0f;
    return r;
  }
  // One fused multiply-add, as PyTorch's kernels compute it (their builds contract scale·x − 0.5):
  // separate rounding moves some weights by an ulp and turns tiny ones into exact zeros.
#if defined(__CUDA_ARCH__)
  float src = __fmaf_rn(scale, (float)dst + 0.5f, -0.5f);
#else
  float src = std::fma(scale, (float)dst + 0.5f, -0.5f);
#endif
  if (src < 0.0f) src = 0.0f;
  int i0 = (int)src;
  if (i0 > n_in - 1) i0 = n_in - 1;
  float l1 = src - (float)i0;
  if (l1 < 0.0f) l1 = 0.0f;
  if (l1 > 1.0f) l1 = 1.0f;
  r.i0 = i0;
  r.i1 = i0 + (i0 < n_in - 1 ? 1 : 0);
  r.l1 = l1;
  r.l0 = 1.0f - l1;
  return r;
}

// value = h0·(w0·x00 + w1·x01) + h1·(w0·x10 + w1·x11), PyTorch's order.
FCN_HD float interp_value(const Interp& y, const Interp& x, float x00, float x01, float x10,
                          float x11) {
  return y.l0 * (x.l0 * x00 + x.l1 * x01) + y.l1 * (x.l0 * x10 + x.l1 * x11);
}

// --- upsample_crop_argmax and interp_argmax: staged two-tap blends ------------------------------
// w0·a + w1·b: two rounded products, one rounded sum (both backends compile without fused
// multiply-add). interp_value above is blend2(y.l0, blend2(x.l0, x00, x.l1, x01), y.l1,
// blend2(x.l0, x10, x.l1, x11)) operation for operation, so the CPU kernels may blend rows first
// (horizontal pass, reused across output rows) and stay bit-identical to the per-pixel CUDA form.
// (A template so that the CPU kernels can also run it on GCC vectors: the same float operations,
// lane for lane.)
template <typename V>
FCN_HD V blend2(V w0, V a, V w1, V b) { return w0 * a + w1 * b; }

// How upsample_crop_argmax's weight is passed (Python: fcnfast/ops/native.py):
//   kLearned            W as (k, k, C_in, C_out) float32: the general C×C path;
//   kBilinear2D         the diagonal bilinear (k, k) float32 filter f, used as is;
//   kBilinearSeparable  its 1-D factor g (k floats), when f[i][j] == g[i]·g[j] exactly in float32.
enum WeightKind : int { kLearned = 0, kBilinear2D = 1, kBilinearSeparable = 2 };

// Depthwise deconvolution value of one class at one output pixel, horizontal taps first:
//   wy0·(w00·x00 + w01·x01) + wy1·(w10·x10 + w11·x11)
// Separable: wy_i = g[ky_i], w_i0 = g[kx0], w_i1 = g[kx1]. 2-D filter: wy_i = 1, w_ij =
// f[ky_i][kx_j] (1·a is exact, so this is the filter's own 4-tap sum). An invalid tap passes
// x = 0 and weight 0: its product is +0 whichever operand the caller zeroes.
FCN_HD float deconv_value(float wy0, float wy1, float w00, float w01, float w10, float w11,
                          float x00, float x01, float x10, float x11) {
  return blend2(wy0, blend2(w00, x00, w01, x01), wy1, blend2(w10, x10, w11, x11));
}

// The weights of deconv_value, from the filter as upsample_crop_argmax receives it (WeightKind:
// the separable factor g, or the (k, k) filter f). A row tap's vertical weight: g[ky], or 1 for the
// 2-D filter (its rows carry the vertical factor). A tap's horizontal weight: g[kx], or f[ky][kx].
// An invalid tap weighs 0. The CPU kernel takes them per row and per phase (output column mod s:
// kx0 = phase, kx1 = phase + s), the CUDA kernel per pixel (deconv_weights).
FCN_HD float deconv_row_weight(const float* filt, bool separable, bool valid, int ky) {
  return valid ? (separable ? filt[ky] : 1.0f) : 0.0f;
}

FCN_HD float deconv_col_weight(const float* filt, bool separable, int k, bool valid, int ky,
                               int kx) {
  return valid ? (separable ? filt[kx] : filt[ky * k + kx]) : 0.0f;
}

struct DeconvWeights {
  float wy0, wy1, w00, w01, w10, w11;
};

FCN_HD DeconvWeights deconv_weights(const float* filt, bool separable, int k, const Taps& ty,
                                    const Taps& tx, const PixelTaps& t) {
  DeconvWeights d;
  d.wy0 = deconv_row_weight(filt, separable, ty.v0, ty.k0);
  d.wy1 = deconv_row_weight(filt, separable, ty.v1, ty.k1);
  d.w00 = deconv_col_weight(filt, separable, k, t.v00, ty.k0, tx.k0);
  d.w01 = deconv_col_weight(filt, separable, k, t.v01, ty.k0, tx.k1);
  d.w10 = deconv_col_weight(filt, separable, k, t.v10, ty.k1, tx.k0);
  d.w11 = deconv_col_weight(filt, separable, k, t.v11, ty.k1, tx.k1);
  return d;
}

// The reference's dense transposed conv multiplies every input class by every weight, off-diagonal
// zeros included (0·inf = 0·NaN = NaN). In the depthwise path, a non-finite input of class ci at a
// valid tap therefore makes every other class NaN at that pixel. bad0: class 0 had one; bad_rest: a
// class >= 1 had one; v0_nan: class 0's own value is NaN. With C > 1 the winner is then the first
// NaN class: 0 if a class >= 1 was bad or class 0 is NaN itself, else 1.
FCN_HD void spread_nonfinite(bool bad0, bool bad_rest, bool v0_nan, int num_classes, float& best,
                             int& best_idx) {
  if (num_classes > 1 && (bad0 || bad_rest)) {
    best_idx = (bad_rest || v0_nan) ? 0 : 1;
    best = bits_to_float(0x7fc00000u);
  }
}

// upsample_crop_argmax's depthwise path at one output pixel: deconv_value of every class in
// increasing order with the running argmax, then the non-finite spreading. x: the image's class 0
// plane (planes hw apart). The CUDA kernel runs it for every pixel; the CPU kernel, whose
// vectorised passes compute the same values by rows and phases, for the pixels of chunks that
// hold a non-finite input.
template <typename T>
FCN_HD void depthwise_argmax_pixel(const T* x, int64_t hw, int num_classes, const PixelTaps& t,
                                   const DeconvWeights& d, float& best, int& best_idx) {
  best = bits_to_float(0xff800000u);  // -inf
  best_idx = 0;
  bool bad0 = false, bad_rest = false, v0_nan = false;
  for (int c = 0; c < num_classes; ++c, x += hw) {
    const float x00 = tap_value(x, t.o00, t.v00), x01 = tap_value(x, t.o01, t.v01),
                x10 = tap_value(x, t.o10, t.v10), x11 = tap_value(x, t.o11, t.v11);
    const float v = deconv_value(d.wy0, d.wy1, d.w00, d.w01, d.w10, d.w11, x00, x01, x10, x11);
    const bool bad = !is_finite(x00) || !is_finite(x01) || !is_finite(x10) || !is_finite(x11);
    if (c == 0) {
      bad0 = bad;
      v0_nan = is_nan(v);
    } else {
      bad_rest = bad_rest || bad;
    }
    argmax_update(v, c, best, best_idx);
  }
  spread_nonfinite(bad0, bad_rest, v0_nan, num_classes, best, best_idx);
}

// argmax_update for a score known not to be NaN (the CPU kernels' vectorised fast path, taken when
// the blended inputs of a class are all finite): then "a strictly larger score wins" is the whole
// rule, and a NaN best from an earlier class stays.
FCN_HD void argmax_update_number(float v, int c, float& best, int& best_idx) {
  if (v > best) {
    best = v;
    best_idx = c;
  }
}

// General path: one multiply-add of the running class score, acc + x·w (no contraction). Both
// backends sum a class's terms in the same order: valid taps (iy0, ix0), (iy0, ix1), (iy1, ix0),
// (iy1, ix1), then input classes ascending. (A template so that the CPU kernel can run it on
// GCC vectors of pixels, V·float broadcasting w: lane for lane the same float operations.)
template <typename V, typename W>
FCN_HD V mac(V acc, V x, W w) { return acc + x * w; }

// upsample_crop_argmax's general path at one output pixel: for each output class co (ascending),
// Σ over the valid taps and input classes of x·W[ci, co] (mac, the order above), with the running
// argmax. x: the image's class 0 plane (planes hw apart, rows w apart); wt: W as
// (k, k, C_in, C_out). The CUDA kernel runs it for every pixel, the CPU kernel for the pixels at the
// edges of a row (a tap outside the input), where its vectorised blocks do not reach.
//
// The (C_in, C_out) slice of W that tap t (0..3: (ky0, kx0), (ky0, kx1), (ky1, kx0), (ky1, kx1))
// of a pixel uses. Its kernel indices depend only on the output coordinate mod s, so every pixel of
// one phase uses the same four slices (the CUDA kernel stages them in shared memory per phase).
FCN_HD int64_t learned_tap_slice(int t, int num_classes, int k, const Taps& ty, const Taps& tx) {
  const int ky = (t >> 1) ? ty.k1 : ty.k0, kx = (t & 1) ? tx.k1 : tx.k0;
  return (int64_t)(ky * k + kx) * num_classes * num_classes;
}

// The pixel's loop over its four tap slices (slices[t]: W[ci, co] at ci·C + co), wherever they are.
template <typename T>
FCN_HD void learned_argmax_pixel_slices(const T* x, int64_t hw, int64_t w,
                                        const float* const* slices, int num_classes,
                                        const Taps& ty, const Taps& tx, float& best,
                                        int& best_idx) {
  const bool vy[2] = {ty.v0, ty.v1}, vx[2] = {tx.v0, tx.v1};
  const int iy[2] = {ty.i0, ty.i1}, ix[2] = {tx.i0, tx.i1};
  best = bits_to_float(0xff800000u);  // -inf
  best_idx = 0;
  for (int co = 0; co < num_classes; ++co) {
    float acc = 0.0f;
    FCN_UNROLL
    for (int t = 0; t < 4; ++t) {
      const int a = t >> 1, b = t & 1;
      if (!vy[a] || !vx[b]) continue;  // a tap outside the input is no term at all
      const T* xs = x + (int64_t)iy[a] * w + ix[b];
      const float* wc = slices[t] + co;
      for (int ci = 0; ci < num_classes; ++ci)
        acc = mac(acc, to_float(xs[ci * hw]), wc[(int64_t)ci * num_classes]);
    }
    argmax_update(acc, co, best, best_idx);
  }
}

template <typename T>
FCN_HD void learned_argmax_pixel(const T* x, int64_t hw, int64_t w, const float* wt,
                                 int num_classes, int k, const Taps& ty, const Taps& tx,
                                 float& best, int& best_idx) {
  const float* slices[4];
  FCN_UNROLL
  for (int t = 0; t < 4; ++t) slices[t] = wt + learned_tap_slice(t, num_classes, k, ty, tx);
  learned_argmax_pixel_slices(x, hw, w, slices, num_classes, ty, tx, best, best_idx);
}

// --- preprocess and overlay --------------------------------------------------------------------
// Output channel oc reads input channel (RGB frames; bgr: the Caffe nets' order).
FCN_HD int preprocess_source_channel(int oc, bool bgr) { return bgr ? 2 - oc : oc; }

// (v·scale − mean) / std in float32, the reference's order; the division skipped when every std is
// 1 (same result).
FCN_HD float preprocess_value(uint8_t v, float scale, float mean, float std, bool divide) {
  const float y = (float)v * scale - mean;
  return divide ? y / std : y;
}

// floor(frame·keep + colour·alpha + 0.5) with keep = 1 − alpha computed in double by the caller.
FCN_HD uint8_t overlay_value(uint8_t frame, uint8_t colour, float keep, float alpha) {
  float v = (float)frame * keep + (float)colour * alpha;
  v = v + 0.5f;
  int r = (int)v;  // v >= 0: truncation is floor
  if (r < 0) r = 0;
  if (r > 255) r = 255;
  return (uint8_t)r;
}

FCN_NAMESPACE_END

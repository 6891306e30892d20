// C++ CPU head kernels (module fcnfast._C). Pointers arrive as integers from Python, which has
// already checked shapes, dtypes and geometry (fcnfast/ops/checks.py); tensors are contiguous.
#pragma once

#include <array>
#include <cstdint>

namespace fcn {
namespace cpu {

void preprocess(uintptr_t frames, int64_t n, int64_t h, int64_t w, float scale,
                std::array<float, 3> mean, std::array<float, 3> stdev, bool bgr, bool divide,
                bool channels_last, uintptr_t out, int out_dtype);

void overlay(uintptr_t frames, uintptr_t labels, int label_dtype, uintptr_t palette,
             int64_t palette_size, int64_t n, int64_t h, int64_t w, float keep, float alpha,
             uintptr_t out);

// crop(convT(x, W, s)) + crop(skip score). weight: the (k, k) filter when `bilinear`, else W
// (C, C, k, k); float32. skip (0: none) is in x's dtype: scores (N, C, hs, ws), or features
// (N, f, hs, ws) when skip_weight (C, f) float32 is given; skip_bias (C) float32 or 0.
void upsample_crop_add(uintptr_t x, uintptr_t weight, bool bilinear, uintptr_t skip,
                       uintptr_t skip_weight, uintptr_t skip_bias, int64_t n, int64_t c, int64_t h,
                       int64_t w, int64_t k, int64_t s, int64_t oy, int64_t ox, int64_t out_h,
                       int64_t out_w, int64_t f, int64_t hs, int64_t ws, int64_t soy, int64_t sox,
                       float skip_scale, uintptr_t out, int dtype);

// argmax_c crop(convT(x, W, s)): labels (N, H, W) in label_dtype, and the winning scores in x's
// dtype when scores != 0. weight (float32) as weight_kind says (fcn::WeightKind): W as
// (k, k, C_in, C_out), the (k, k) bilinear filter, or its separable 1-D factor (k).
void upsample_crop_argmax(uintptr_t x, uintptr_t weight, int weight_kind, int64_t n, int64_t c,
                          int64_t h, int64_t w, int64_t k, int64_t s, int64_t oy, int64_t ox,
                          int64_t out_h, int64_t out_w, uintptr_t labels, int label_dtype,
                          uintptr_t scores, int dtype);

// argmax_c F.interpolate(x, (H, W), bilinear, align_corners=False); scale_* = float32(in) / out.
void interp_argmax(uintptr_t x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h,
                   int64_t out_w, float scale_h, float scale_w, uintptr_t labels, int label_dtype,
                   uintptr_t scores, int dtype);

}  // namespace cpu
}  // namespace fcn

// C++ CPU head kernels (module fcnfast._C). Pointers arrive as integers from Python, which has
// already checked shapes, dtypes and geometry (fcnfast/contract.py); tensors are contiguous.
//
// The kernels are compiled once per instruction-set level (capability.h); each level's copy of the
// entry points below lives in that level's namespace (fcn_math.h's FCN_NAMESPACE_BEGIN) and is
// reached through its CpuKernels table.
#pragma once

#include <array>
#include <cstdint>

#include "fcn_math.h"
#include "upsample_crop_add.h"

namespace fcn {

// uint8 (N, H, W, 3) RGB frames → (N, 3, H, W), or channels-last, in out_dtype:
// (v·scale − mean) / std, with the division only when `divide`; bgr: the Caffe nets' order.
using PreprocessFn = void(uintptr_t frames, int64_t n, int64_t h, int64_t w, float scale,
                          std::array<float, 3> mean, std::array<float, 3> stdev, bool bgr,
                          bool divide, bool channels_last, uintptr_t out, int out_dtype);

// uint8 frames (N, H, W, 3) blended with palette[labels]: floor(frame·keep + colour·alpha + 0.5).
using OverlayFn = void(uintptr_t frames, uintptr_t labels, int label_dtype, uintptr_t palette,
                       int64_t palette_size, int64_t n, int64_t h, int64_t w, float keep,
                       float alpha, uintptr_t out);

// crop(convT(x, W, s)) + crop(skip score): arguments as upsample_crop_add.h describes.
using UpsampleCropAddFn = void(const UpsampleAddArgs& args);

// argmax_c crop(convT(x, W, s)): labels (N, H, W) in label_dtype, and the winning scores in x's
// dtype when scores != 0. weight (float32) as weight_kind says (fcn::WeightKind): W as
// (k, k, C_in, C_out), the (k, k) bilinear filter, or its separable 1-D factor (k).
using UpsampleCropArgmaxFn = void(uintptr_t x, uintptr_t weight, int weight_kind, int64_t n,
                                  int64_t c, int64_t h, int64_t w, int64_t k, int64_t s,
                                  int64_t oy, int64_t ox, int64_t out_h, int64_t out_w,
                                  uintptr_t labels, int label_dtype, uintptr_t scores, int dtype);

// argmax_c F.interpolate(x, (H, W), bilinear, align_corners=False); scale_* = float32(in) / out.
using InterpArgmaxFn = void(uintptr_t x, int64_t n, int64_t c, int64_t h, int64_t w,
                            int64_t out_h, int64_t out_w, float scale_h, float scale_w,
                            uintptr_t labels, int label_dtype, uintptr_t scores, int dtype);

// Winograd F(m×m, 3×3), m = 2 or 4, of a stride-1 3×3 convolution, dilation d, zero padding p
// (cpu/winograd.cpp):
// x channels-last (N, H, W, C) → V; products M[t, q] = V[t, q]·U[q] → y channels-last
// (N, H + 2p − 2d, W + 2p − 2d, K), plus bias (float32, K, or 0), then ReLU when `relu`. Tile t's
// point q of V / M (channels contiguous) lies at row_stride·t + point_stride·q elements. Only the
// tiles' rows are written and read.
using WinogradInputFn = void(uintptr_t x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t d,
                             int64_t p, int64_t m, uintptr_t v, int64_t row_stride, int64_t point_stride,
                             int dtype);
using WinogradOutputFn = void(uintptr_t products, int64_t row_stride, int64_t point_stride, uintptr_t bias,
                              bool relu, int64_t n, int64_t h, int64_t w, int64_t k, int64_t d,
                              int64_t p, int64_t m, uintptr_t y, int dtype);

// Cross-channel LRN (cpu/lrn.cpp): x channels-last (N, H, W, C) with pixel strides sn, sh, sw
// (elements; channels contiguous) → y contiguous (N, H, W, C).
using LrnFn = void(uintptr_t x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t sn, int64_t sh,
                   int64_t sw, int64_t size, float alpha, float beta, float k, uintptr_t y, int dtype);

// One level's kernels (kernel_table.cpp defines one table per level that setup.py compiled).
struct CpuKernels {
  const char* name;    // "default", "avx2", "avx512", or "march=<cpu>" (FCNFAST_CPU_MARCH)
  const char* flags;   // the compiler flags this level was built with
  uint64_t features;   // the CpuFeature bits its code may use (from the compiler's own macros)
  PreprocessFn* preprocess;
  OverlayFn* overlay;
  UpsampleCropAddFn* upsample_crop_add;
  UpsampleCropArgmaxFn* upsample_crop_argmax;
  InterpArgmaxFn* interp_argmax;
  WinogradInputFn* winograd_input;
  WinogradOutputFn* winograd_output;
  LrnFn* lrn;
};

}  // namespace fcn

// This level's entry points (declared through the signatures above; defined in cpu/<op>.cpp).
FCN_NAMESPACE_BEGIN
namespace cpu {

PreprocessFn preprocess;
OverlayFn overlay;
UpsampleCropAddFn upsample_crop_add;
UpsampleCropArgmaxFn upsample_crop_argmax;
InterpArgmaxFn interp_argmax;
WinogradInputFn winograd_input;
WinogradOutputFn winograd_output;
LrnFn lrn;

}  // namespace cpu
FCN_NAMESPACE_END

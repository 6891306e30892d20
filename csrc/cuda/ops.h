// CUDA head kernels (module fcnfast._cuda). Pointers and the stream handle arrive as integers from
// Python (torch.cuda.current_stream().cuda_stream), which has already checked the arguments;
// tensors are contiguous and on the current device. Each launcher throws std::runtime_error with
// CUDA's message when the launch fails (pybind11 turns it into a Python RuntimeError).
#pragma once

#include <array>
#include <cstdint>

#include "upsample_crop_add.h"

namespace fcn {
namespace cuda {

void preprocess(uintptr_t frames, int64_t n, int64_t h, int64_t w, float scale,
                std::array<float, 3> mean, std::array<float, 3> stdev, bool bgr, bool divide,
                bool channels_last, uintptr_t out, int out_dtype, uintptr_t stream);

void overlay(uintptr_t frames, uintptr_t labels, int label_dtype, uintptr_t palette,
             int64_t palette_size, int64_t n, int64_t h, int64_t w, float keep, float alpha,
             uintptr_t out, uintptr_t stream);

// crop(convT(x, W, s)) + crop(skip score): arguments as upsample_crop_add.h describes, + stream.
void upsample_crop_add(const UpsampleAddArgs& args, uintptr_t stream);

// argmax_c crop(convT(x, W, s)); arguments as cpu/ops.h's UpsampleCropArgmaxFn, + stream.
void upsample_crop_argmax(uintptr_t x, uintptr_t weight, int weight_kind, int64_t n, int64_t c,
                          int64_t h, int64_t w, int64_t k, int64_t s, int64_t oy, int64_t ox,
                          int64_t out_h, int64_t out_w, uintptr_t labels, int label_dtype,
                          uintptr_t scores, int dtype, uintptr_t stream);

// argmax_c F.interpolate(x, (H, W), bilinear); arguments as cpu/ops.h's InterpArgmaxFn, + stream.
void interp_argmax(uintptr_t x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h,
                   int64_t out_w, float scale_h, float scale_w, uintptr_t labels, int label_dtype,
                   uintptr_t scores, int dtype, uintptr_t stream);

}  // namespace cuda
}  // namespace fcn

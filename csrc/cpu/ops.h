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

}  // namespace cpu
}  // namespace fcn

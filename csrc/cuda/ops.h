// CUDA head kernels (module fcnfast._cuda). Pointers and the stream handle arrive as integers from
// Python (torch.cuda.current_stream().cuda_stream), which has already checked the arguments;
// tensors are contiguous and on the current device. Each launcher throws std::runtime_error with
// CUDA's message when the launch fails (pybind11 turns it into a Python RuntimeError).
#pragma once

#include <array>
#include <cstdint>

namespace fcn {
namespace cuda {

void preprocess(uintptr_t frames, int64_t n, int64_t h, int64_t w, float scale,
                std::array<float, 3> mean, std::array<float, 3> stdev, bool bgr, bool divide,
                bool channels_last, uintptr_t out, int out_dtype, uintptr_t stream);

void overlay(uintptr_t frames, uintptr_t labels, int label_dtype, uintptr_t palette,
             int64_t palette_size, int64_t n, int64_t h, int64_t w, float keep, float alpha,
             uintptr_t out, uintptr_t stream);

}  // namespace cuda
}  // namespace fcn

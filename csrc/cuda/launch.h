// Launch hygiene shared by the .cu files: grid sizing and turning CUDA errors into exceptions.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace fcn {
namespace cuda {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over `n` items (capped: the loop covers the rest).
inline unsigned int grid_for(int64_t n) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks);
}

inline void check_launch(const char* op) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(op) + ": CUDA launch failed: " + cudaGetErrorString(err));
}

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace cuda
}  // namespace fcn

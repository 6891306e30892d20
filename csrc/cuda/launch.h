// Launch hygiene shared by the .cu files: grid sizing and turning CUDA errors into exceptions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
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

// The grid-stride loop of every kernel here: for (int64_t i = thread; i < n; i += threads).
#define FCN_GRID_STRIDE_LOOP(i, n)                                                     \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);           \
       i += (int64_t)gridDim.x * blockDim.x)

// Flat output index p of an (N, out_h, out_w) map → image, row, column.
struct OutPixel {
  int64_t img;
  int y, x;
};

__device__ __forceinline__ OutPixel out_pixel(int64_t p, int64_t plane, int out_w) {
  OutPixel o;
  o.img = p / plane;
  const int64_t q = p - o.img * plane;
  o.y = static_cast<int>(q / out_w);
  o.x = static_cast<int>(q - static_cast<int64_t>(o.y) * out_w);
  return o;
}

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace cuda
}  // namespace fcn

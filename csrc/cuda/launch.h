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

// The grid of a learned (C×C) path run phase by phase (output pixel mod s), each block staging its
// phase's four C×C weight slices in shared memory: blockIdx.y is the phase (y0, x0) = (y / pcols,
// y % pcols), whose pixels (y0 + j·s, x0 + i·s), j < hp, i < wp, the blocks of blockIdx.x cover
// grid-stride, `per_pixel` items each (images × class blocks).
struct PhaseGrid {
  dim3 grid;
  int64_t bytes;  // the staged slices
  int pcols, hp, wp;
};

// False where the slices do not fit the shared memory a block may take without opting in to more,
// or the phases exceed grid dimension y.
inline bool phase_grid(int64_t c, int64_t s, int64_t out_h, int64_t out_w, int64_t per_pixel,
                       PhaseGrid& pg) {
  constexpr int64_t kStagedBytes = 48 * 1024;
  // Each block stages its slices once: about this many blocks in all keep that small against the
  // pixels' work, the grid-stride loop covering the rest.
  constexpr int64_t kBlocksStaged = 2048;
  pg.bytes = 4 * c * c * static_cast<int64_t>(sizeof(float));
  const int64_t rows = out_h < s ? out_h : s, pcols = out_w < s ? out_w : s;  // phases present
  const int64_t phases = rows * pcols;
  if (pg.bytes > kStagedBytes || phases > 65535) return false;
  const int64_t hp = (out_h + s - 1) / s, wp = (out_w + s - 1) / s;
  int64_t blocks = kBlocksStaged / phases;
  const int64_t needed = grid_for(per_pixel * hp * wp);
  blocks = blocks < 1 ? 1 : (blocks > needed ? needed : blocks);
  pg.grid = dim3(static_cast<unsigned int>(blocks), static_cast<unsigned int>(phases));
  pg.pcols = static_cast<int>(pcols);
  pg.hp = static_cast<int>(hp);
  pg.wp = static_cast<int>(wp);
  return true;
}

}  // namespace cuda
}  // namespace fcn

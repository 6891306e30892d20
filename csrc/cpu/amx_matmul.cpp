// amx_matmul on the AMX tile unit (cpu/amx_matmul.h). Compiled once by setup.py with AMX_FLAGS;
// everything here lives in fcn::cpu_amx and runs only after amx_kernels() said this CPU can.
//
// Blocking: a 32×32 block of out is four 16×16 float32 accumulator tiles (0–3), fed per 32-channel
// step by two 16-row tiles of A (4, 5) and two 16-column tiles of W (6, 7). A thread copies its
// 32 rows of A into tile order (a channels-last map's rows lie K·2 bytes apart, a power of two
// that maps a strided tile load onto a few L1 sets), then runs every column block of its share
// over them.
#include "cpu/amx_matmul.h"

// GCC 12 warns of its own AVX-512 intrinsics' placeholder operands (_mm512_undefined_*) at -O3.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#if !defined(__AMX_TILE__) || !defined(__AMX_BF16__) || !defined(__AVX512BF16__)
#error "cpu/amx_matmul.cpp is compiled by setup.py with AMX_FLAGS"
#endif

namespace fcn {
namespace cpu_amx {
namespace {

constexpr int kBlock = 32;               // rows of an m-block = columns of an n-block = channels a step
constexpr int64_t kStep = 2 * 16 * 32;   // bfloat16 elements of two tiles: a step of A or of W

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void configure_tiles() {
  TileConfig c;
  std::memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  _tile_loadconfig(&c);
}

// The threads' A blocks (`elems` bfloat16 in all), kept by the calling thread between calls.
uint16_t* a_blocks(int64_t elems) {
  static thread_local uint16_t* buffer = nullptr;
  static thread_local int64_t capacity = 0;
  if (elems > capacity) {
    std::free(buffer);
    buffer = static_cast<uint16_t*>(std::aligned_alloc(64, static_cast<size_t>(elems) * 2));
    capacity = buffer ? elems : 0;
    if (!buffer) throw std::bad_alloc();
  }
  return buffer;
}

// Units [u0, u1) of an A block's copy into tile order, blk[step][row][32] (unit = step·32 + row;
// rows past `rows` zero): step by step, so the stores land in order.
void copy_a_rows(const uint16_t* a, int rows, int64_t lda, int64_t steps, uint16_t* blk, int64_t u0,
                 int64_t u1) {
  if (u1 > steps * kBlock) u1 = steps * kBlock;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t s = u / kBlock;
    const int r = static_cast<int>(u % kBlock);
    const __m512i v = r < rows ? _mm512_loadu_si512(a + r * lda + s * kBlock) : _mm512_setzero_si512();
    _mm512_store_si512(blk + s * kStep + r * kBlock, v);
  }
}

// acc (32×32 float32, rows of 32) + bias (+ residual), ReLU → `rows` rows of 32 bfloat16.
void store_block(const float* acc, int rows, const float* bias, const uint16_t* res, int64_t ldr,
                 uint16_t* out, int64_t ldo, bool relu) {
  const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
  for (int r = 0; r < rows; ++r) {
    __m512 v0 = _mm512_add_ps(_mm512_load_ps(acc + r * kBlock), b0);
    __m512 v1 = _mm512_add_ps(_mm512_load_ps(acc + r * kBlock + 16), b1);
    if (res) {  // bfloat16 → float32: the 16 bits above 16 zero bits
      const __m512i rb = _mm512_loadu_si512(res + r * ldr);
      const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(rb));
      const __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(rb, 1));
      v0 = _mm512_add_ps(v0, _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)));
      v1 = _mm512_add_ps(v1, _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)));
    }
    if (relu) {
      v0 = _mm512_max_ps(v0, _mm512_setzero_ps());
      v1 = _mm512_max_ps(v1, _mm512_setzero_ps());
    }
    _mm512_storeu_si512(out + r * ldo, (__m512i)_mm512_cvtne2ps_pbh(v1, v0));
  }
}

void pack_weight(uintptr_t w_, int64_t n, int64_t k, uintptr_t packed_) {
  const uint16_t* w = reinterpret_cast<const uint16_t*>(w_);
  uint16_t* packed = reinterpret_cast<uint16_t*>(packed_);
  const int64_t steps = k / kBlock;
  // packed[n-block][step][tile t][row r][2c + p] = W[32·n-block + 16t + c][32·step + 2r + p]:
  // a tile row holds 16 columns' pairs of consecutive channels (the tile unit's bf16 pairs).
  for (int64_t nb = 0; nb < n / kBlock; ++nb)
    for (int64_t s = 0; s < steps; ++s)
      for (int t = 0; t < 2; ++t)
        for (int r = 0; r < 16; ++r)
          for (int c = 0; c < 16; ++c)
            for (int p = 0; p < 2; ++p)
              packed[(nb * steps + s) * kStep + (t * 16 + r) * 32 + 2 * c + p] =
                  w[(nb * kBlock + t * 16 + c) * k + s * kBlock + 2 * r + p];
}

// One call's operands; product b of a batch reads a + b·a_stride, packed + b·N·K and writes
// out + b·out_stride.
struct Product {
  const uint16_t* a;
  int64_t m, lda, a_stride, steps, mbs;  // mbs: 32-row blocks of a product
  const uint16_t* packed;
  int64_t n, k;
  const float* bias;
  const uint16_t* res;
  int64_t ldr;
  uint16_t* out;
  int64_t ldo, out_stride;
  bool relu;

  // Unit u: row block u % mbs of product u / mbs.
  int rows(int64_t u) const {
    const int64_t left = m - (u % mbs) * kBlock;
    return static_cast<int>(left < kBlock ? left : kBlock);
  }
  const uint16_t* a_rows(int64_t u) const { return a + (u / mbs) * a_stride + (u % mbs) * kBlock * lda; }
};

// One thread's share: units [u0, u1) × column blocks [n0, n1). `blk` holds two A blocks: the tile
// unit reads one while the next is copied into the other a few rows at a time between its steps,
// so the copy's loads wait on memory while the tile unit works.
void run_units(const Product& p, int64_t u0, int64_t u1, int64_t n0, int64_t n1, uint16_t* blk) {
  alignas(64) float acc[2 * kBlock * kBlock];  // two blocks' sums: one stored, one finished
  const int64_t steps = p.steps;
  configure_tiles();
  copy_a_rows(p.a_rows(u0), p.rows(u0), p.lda, steps, blk, 0, steps * kBlock);
  const int64_t units = steps * kBlock;  // of the next block's copy, spread over this block's steps
  const int64_t per_step = (units + (n1 - n0) * steps - 1) / ((n1 - n0) * steps);
  for (int64_t u = u0; u < u1; ++u) {
    const int rows = p.rows(u);
    const int64_t b = u / p.mbs, r0 = (u % p.mbs) * kBlock;
    const uint16_t* packed = p.packed + b * p.n * p.k;
    uint16_t* out = p.out + b * p.out_stride + r0 * p.ldo;
    const uint16_t* res = p.res ? p.res + r0 * p.ldr : nullptr;
    uint16_t* cur = blk + ((u - u0) & 1) * steps * kStep;
    uint16_t* nxt = blk + ((u - u0 + 1) & 1) * steps * kStep;
    const bool more = u + 1 < u1;
    const uint16_t* next_a = more ? p.a_rows(u + 1) : nullptr;
    const int next_rows = more ? p.rows(u + 1) : 0;
    int64_t copied = 0;
    auto finish = [&](int64_t nb) {
      store_block(acc + (nb & 1) * kBlock * kBlock, rows, p.bias ? p.bias + nb * kBlock : nullptr,
                  res ? res + nb * kBlock : nullptr, p.ldr, out + nb * kBlock, p.ldo, p.relu);
    };
    for (int64_t nb = n0; nb < n1; ++nb) {
      const uint16_t* w = packed + nb * steps * kStep;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t s = 0; s < steps; ++s) {
        if (more && copied < units) {
          copy_a_rows(next_a, next_rows, p.lda, steps, nxt, copied, copied + per_step);
          copied += per_step;
        }
        _tile_loadd(4, cur + s * kStep, 64);
        _tile_loadd(5, cur + s * kStep + kStep / 2, 64);
        _tile_loadd(6, w + s * kStep, 64);
        _tile_loadd(7, w + s * kStep + kStep / 2, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      // The previous block is finished while the tile unit computes this one.
      float* sums = acc + (nb & 1) * kBlock * kBlock;
      _tile_stored(0, sums, kBlock * 4);
      _tile_stored(1, sums + 16, kBlock * 4);
      _tile_stored(2, sums + 16 * kBlock, kBlock * 4);
      _tile_stored(3, sums + 16 * kBlock + 16, kBlock * 4);
      if (nb > n0) finish(nb - 1);
    }
    finish(n1 - 1);
  }
  _tile_release();
}

void matmul(uintptr_t a, int64_t m, int64_t k, int64_t lda, uintptr_t packed, int64_t n,
            uintptr_t bias, uintptr_t res, int64_t ldr, uintptr_t out, int64_t ldo, bool relu,
            int64_t batch, int64_t a_stride, int64_t out_stride) {
  if (m <= 0 || n <= 0 || batch <= 0) return;
  const int64_t mbs = (m + kBlock - 1) / kBlock, nbs = n / kBlock, steps = k / kBlock;
  const Product p{reinterpret_cast<const uint16_t*>(a), m, lda, a_stride, steps, mbs,
                  reinterpret_cast<const uint16_t*>(packed), n, k, reinterpret_cast<const float*>(bias),
                  reinterpret_cast<const uint16_t*>(res), ldr, reinterpret_cast<uint16_t*>(out), ldo,
                  out_stride, relu};
  const int threads = omp_get_max_threads();
  // A weight of more than half an L2 is shared out by columns (each thread's part stays in its
  // L2 while it runs every row); a smaller one whole to every thread, which then takes its share
  // of the row blocks.
  const bool by_columns = n * k * 2 > (int64_t(1) << 20) && nbs >= threads;
  const int64_t units = batch * mbs;
  uint16_t* blocks = a_blocks(threads * 2 * steps * kStep);
#pragma omp parallel num_threads(threads)
  {
    const int nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t u0 = by_columns ? 0 : units * id / nt, u1 = by_columns ? units : units * (id + 1) / nt;
    const int64_t n0 = by_columns ? nbs * id / nt : 0, n1 = by_columns ? nbs * (id + 1) / nt : nbs;
    if (u0 < u1 && n0 < n1) run_units(p, u0, u1, n0, n1, blocks + id * 2 * steps * kStep);
  }
}

}  // namespace
}  // namespace cpu_amx

// Reached through amx_kernels() only (capability.cpp).
extern const AmxKernels kernels_amx = {&cpu_amx::pack_weight, &cpu_amx::matmul};

}  // namespace fcn

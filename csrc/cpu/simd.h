// The CPU kernels' GCC vector types, and loads and stores of a register's worth of float32 lanes
// from float32 or bfloat16 storage (the bfloat16 rounding is fcn_math.h's, lane by lane).
#pragma once

// The 64-byte GCC vectors below (and fcn_math.h's templates on them) are passed by value only
// between inline functions of one level's copy of the kernels (each in its own namespace: see
// fcn_math.h), so the note that their parameter ABI differs between -m flags does not concern us.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <cstdint>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "fcn_math.h"

FCN_NAMESPACE_BEGIN
namespace cpu {

// GCC vectors of 16 floats / ints (one AVX-512 register; narrower levels split them).
typedef float vec16 __attribute__((vector_size(64)));
typedef int ivec16 __attribute__((vector_size(64)));

// The float vector of one register of this level (16, 8 or 4 lanes), for loops over independent
// lanes whose accumulators must stay in registers: a 16-float GCC vector split over narrower
// registers does not.
#if defined(__AVX512F__)
constexpr int kRegLanes = 16;
#elif defined(__AVX__)
constexpr int kRegLanes = 8;
#else
constexpr int kRegLanes = 4;
#endif
typedef float vreg __attribute__((vector_size(4 * kRegLanes)));
typedef uint32_t vreg_bits __attribute__((vector_size(4 * kRegLanes)));
typedef uint16_t vreg_bf16 __attribute__((vector_size(2 * kRegLanes)));

inline vreg load_lanes(const float* p) {
  vreg v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline vreg load_lanes(const bf16_t* p) {
#if defined(__AVX512F__)  // one vpmovzxwd (see store_lanes)
  const vreg_bits u = reinterpret_cast<vreg_bits>(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
#else
  vreg_bf16 h;
  std::memcpy(&h, p, sizeof h);
  const vreg_bits u = __builtin_convertvector(h, vreg_bits) << 16;
#endif
  vreg v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

template <typename T> inline vreg load_lanes(const T* p) {  // other storage: lane by lane
  float f[kRegLanes];
  for (int i = 0; i < kRegLanes; ++i) f[i] = to_float(p[i]);
  return load_lanes(f);
}

inline void store_lanes(float* p, vreg v) { std::memcpy(p, &v, sizeof v); }

inline void store_lanes(bf16_t* p, vreg v) {
  vreg_bits u;
  std::memcpy(&u, &v, sizeof u);
  const vreg_bits r = bf16_rounded_bits(u);
#if defined(__AVX512F__)  // one vpmovdw, where GCC narrows the generic vector in several shuffles
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(reinterpret_cast<__m512i>(r)));
#else
  const vreg_bf16 h = __builtin_convertvector(r, vreg_bf16);
  std::memcpy(p, &h, sizeof h);
#endif
}

template <typename T> inline void store_lanes(T* p, vreg v) {
  float f[kRegLanes];
  store_lanes(f, v);
  for (int i = 0; i < kRegLanes; ++i) p[i] = from_float<T>(f[i]);
}

// The first n < kRegLanes lanes (the rest zero), and their store.
template <typename T> inline vreg load_lanes(const T* p, int n) {
  T part[kRegLanes] = {};
  std::memcpy(part, p, sizeof(T) * n);
  return load_lanes(static_cast<const T*>(part));
}

template <typename T> inline void store_lanes(T* p, vreg v, int n) {
  T part[kRegLanes];
  store_lanes(part, v);
  std::memcpy(p, part, sizeof(T) * n);
}

}  // namespace cpu
FCN_NAMESPACE_END

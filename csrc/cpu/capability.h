// Instruction-set levels of the CPU module and the choice among them at import — PyTorch's CPU
// capability dispatch (ATEN_CPU_CAPABILITY), for our five kernels.
//
// setup.py compiles the kernels (every csrc/cpu/*.cpp but module.cpp and capability.cpp) once per
// level, each copy in its own namespace (fcn_math.h's FCN_NAMESPACE_BEGIN) and described by its
// CpuKernels table (kernel_table.cpp):
//   default  the x86-64 baseline (SSE2), or the target's baseline elsewhere: runs on every CPU;
//   avx2     + AVX2, FMA, F16C, BMI1/2, LZCNT, POPCNT (x86-64-v3 but MOVBE: Haswell, Zen 1 on);
//   avx512   + AVX-512 F/CD/BW/DQ/VL (x86-64-v4's AVX-512: Skylake-SP, Zen 4 and later);
//   march=X  only with FCNFAST_CPU_MARCH=X (a build for one's own machine), next to default.
// Every level is built with -ffp-contract=off and without fast-math: wider vectors and hardware
// fp16 conversion change how fast, never what is computed, so all levels give bitwise-identical
// results. The bindings and this dispatcher are built for the baseline, so the module imports on
// any CPU; cpu_kernels() is the level chosen there: the highest level built whose features this
// CPU and its OS support, or the level named by FCNFAST_CPU_CAPABILITY when that is lower.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/ops.h"

namespace fcn {

// x86 features a level's code may use: those a compiler can emit from plain C++ at some -m flag.
// A level's mask comes from the compiler's predefined macros (kernel_table.cpp), so it matches
// the flags setup.py gave it; capability.cpp asks the CPU (CPUID) and the OS (XGETBV: are the
// AVX / AVX-512 registers saved) for the same bits.
enum CpuFeature : uint64_t {
  kSSE3 = 1ull << 0, kSSSE3 = 1ull << 1, kSSE41 = 1ull << 2, kSSE42 = 1ull << 3,
  kPOPCNT = 1ull << 4, kAVX = 1ull << 5, kAVX2 = 1ull << 6, kFMA = 1ull << 7, kF16C = 1ull << 8,
  kBMI1 = 1ull << 9, kBMI2 = 1ull << 10, kLZCNT = 1ull << 11, kMOVBE = 1ull << 12,
  kAVX512F = 1ull << 13, kAVX512CD = 1ull << 14, kAVX512BW = 1ull << 15, kAVX512DQ = 1ull << 16,
  kAVX512VL = 1ull << 17, kAVX512IFMA = 1ull << 18, kAVX512VBMI = 1ull << 19,
  kAVX512VBMI2 = 1ull << 20, kAVX512VNNI = 1ull << 21, kAVX512BITALG = 1ull << 22,
  kAVX512VPOPCNTDQ = 1ull << 23, kAVX512BF16 = 1ull << 24, kAVX512FP16 = 1ull << 25,
  kGFNI = 1ull << 26, kVAES = 1ull << 27, kVPCLMULQDQ = 1ull << 28, kAVXVNNI = 1ull << 29,
};

// The level in use, chosen once (choose_cpu_kernels; before that, the baseline).
const CpuKernels& cpu_kernels();

// Chooses the level (module import): `request` is FCNFAST_CPU_CAPABILITY (null or empty: the
// best). Asking for a level this CPU lacks, one not built, or an unknown name falls back to the
// best supported level not above it; the returned text then says so (the module warns once).
std::string choose_cpu_kernels(const char* request);

// The levels built into the module, lowest first, and whether this CPU runs one.
std::vector<const CpuKernels*> cpu_levels_built();
bool cpu_supports(const CpuKernels& level);

// This CPU's features among CpuFeature (lower-case names as the compilers' -m flags spell them).
std::vector<std::string> cpu_feature_names();

}  // namespace fcn

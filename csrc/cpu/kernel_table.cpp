// One level's table (compiled once per level with that level's flags, like the kernels): its
// entry points, name, flags, and the CPU features its code may use. It holds only constant data,
// so nothing of this level runs before capability.cpp has checked the CPU.
#include "cpu/capability.h"

#if !defined(FCN_CPU_CAPABILITY) || !defined(FCN_CPU_CAPABILITY_NAME) || !defined(FCN_CPU_FLAGS)
#error "cpu/kernel_table.cpp is compiled once per level by setup.py (FCN_CPU_CAPABILITY=cpu_<level>)"
#endif

#define FCN_PASTE_(a, b) a##b
#define FCN_PASTE(a, b) FCN_PASTE_(a, b)

namespace fcn {
namespace {

// What the compiler was allowed to use here, from its own macros.
constexpr uint64_t kCompiledFeatures = 0
#if defined(__SSE3__)
    | kSSE3
#endif
#if defined(__SSSE3__)
    | kSSSE3
#endif
#if defined(__SSE4_1__)
    | kSSE41
#endif
#if defined(__SSE4_2__)
    | kSSE42
#endif
#if defined(__POPCNT__)
    | kPOPCNT
#endif
#if defined(__AVX__)
    | kAVX
#endif
#if defined(__AVX2__)
    | kAVX2
#endif
#if defined(__FMA__)
    | kFMA
#endif
#if defined(__F16C__)
    | kF16C
#endif
#if defined(__BMI__)
    | kBMI1
#endif
#if defined(__BMI2__)
    | kBMI2
#endif
#if defined(__LZCNT__)
    | kLZCNT
#endif
#if defined(__MOVBE__)
    | kMOVBE
#endif
#if defined(__AVX512F__)
    | kAVX512F
#endif
#if defined(__AVX512CD__)
    | kAVX512CD
#endif
#if defined(__AVX512BW__)
    | kAVX512BW
#endif
#if defined(__AVX512DQ__)
    | kAVX512DQ
#endif
#if defined(__AVX512VL__)
    | kAVX512VL
#endif
#if defined(__AVX512IFMA__)
    | kAVX512IFMA
#endif
#if defined(__AVX512VBMI__)
    | kAVX512VBMI
#endif
#if defined(__AVX512VBMI2__)
    | kAVX512VBMI2
#endif
#if defined(__AVX512VNNI__)
    | kAVX512VNNI
#endif
#if defined(__AVX512BITALG__)
    | kAVX512BITALG
#endif
#if defined(__AVX512VPOPCNTDQ__)
    | kAVX512VPOPCNTDQ
#endif
#if defined(__AVX512BF16__)
    | kAVX512BF16
#endif
#if defined(__AVX512FP16__)
    | kAVX512FP16
#endif
#if defined(__GFNI__)
    | kGFNI
#endif
#if defined(__VAES__)
    | kVAES
#endif
#if defined(__VPCLMULQDQ__)
    | kVPCLMULQDQ
#endif
#if defined(__AVXVNNI__)
    | kAVXVNNI
#endif
    ;

}  // namespace

// kernels_cpu_default, kernels_cpu_avx2, ...: capability.cpp declares the ones setup.py built.
extern const CpuKernels FCN_PASTE(kernels_, FCN_CPU_CAPABILITY);
const CpuKernels FCN_PASTE(kernels_, FCN_CPU_CAPABILITY) = {
    FCN_CPU_CAPABILITY_NAME, FCN_CPU_FLAGS, kCompiledFeatures,
    &cpu::preprocess, &cpu::overlay, &cpu::upsample_crop_add, &cpu::upsample_crop_argmax,
    &cpu::interp_argmax, &cpu::winograd_input, &cpu::winograd_output,
    &cpu::lrn,
};

}  // namespace fcn

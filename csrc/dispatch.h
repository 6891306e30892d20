// Host-side helpers shared by the CPU and CUDA launchers: dtype dispatch (one explicit
// instantiation per dtype, flash-attention's static-switch pattern) and argument errors.
#pragma once

#include <stdexcept>
#include <string>

#include "fcn_math.h"

// Runs the statements with `T` bound to the storage type of dtype code `code`.
#define FCN_DISPATCH_FLOAT(code, T, ...)                                              \
  switch (code) {                                                                     \
    case fcn::kF32: { using T = float; __VA_ARGS__; } break;                          \
    case fcn::kF16: { using T = fcn::half_t; __VA_ARGS__; } break;                    \
    case fcn::kBF16: { using T = fcn::bf16_t; __VA_ARGS__; } break;                   \
    default: throw std::invalid_argument("unsupported float dtype code " + std::to_string(code)); \
  }

// Labels and label-like integer tensors.
#define FCN_DISPATCH_LABEL(code, L, ...)                                              \
  switch (code) {                                                                     \
    case fcn::kU8: { using L = uint8_t; __VA_ARGS__; } break;                         \
    case fcn::kI32: { using L = int32_t; __VA_ARGS__; } break;                        \
    case fcn::kI64: { using L = int64_t; __VA_ARGS__; } break;                        \
    default: throw std::invalid_argument("unsupported label dtype code " + std::to_string(code)); \
  }

// Compile-time bool from a runtime flag ("has skip", "bilinear"...).
#define FCN_BOOL_SWITCH(cond, NAME, ...)                                              \
  if (cond) { constexpr bool NAME = true; __VA_ARGS__; }                              \
  else { constexpr bool NAME = false; __VA_ARGS__; }

// Host-side switches shared by the CPU and CUDA launchers (flash-attention's static_switch.h
// pattern): a runtime dtype code or flag becomes a compile-time type or constant, so each case of
// the switch instantiates the kernel template for it — one instantiation per dtype (and per flag
// value), generated where the switch stands rather than listed in explicit-instantiation files.
// An unknown code throws std::invalid_argument (a Python ValueError through pybind11).
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

// Labels and label-like integer tensors (overlay's input).
#define FCN_DISPATCH_LABEL(code, L, ...)                                              \
  switch (code) {                                                                     \
    case fcn::kU8: { using L = uint8_t; __VA_ARGS__; } break;                         \
    case fcn::kI32: { using L = int32_t; __VA_ARGS__; } break;                        \
    case fcn::kI64: { using L = int64_t; __VA_ARGS__; } break;                        \
    default: throw std::invalid_argument("unsupported label dtype code " + std::to_string(code)); \
  }

// The argmax ops' labels: uint8 for up to 256 classes, else int32 (head-ops.md; contract.label_dtype).
#define FCN_DISPATCH_ARGMAX_LABEL(code, L, ...)                                       \
  switch (code) {                                                                     \
    case fcn::kU8: { using L = uint8_t; __VA_ARGS__; } break;                         \
    case fcn::kI32: { using L = int32_t; __VA_ARGS__; } break;                        \
    default: throw std::invalid_argument("unsupported argmax label dtype code " + std::to_string(code)); \
  }

// Compile-time bool from a runtime flag ("has skip", "bilinear"...).
#define FCN_BOOL_SWITCH(cond, NAME, ...)                                              \
  if (cond) { constexpr bool NAME = true; __VA_ARGS__; }                              \
  else { constexpr bool NAME = false; __VA_ARGS__; }

// fcnfast._C: thin pybind11 bindings of the CPU head kernels (raw pointers, sizes, dtype codes).
// Each op calls the kernels of the instruction-set level chosen at import (cpu/capability.h).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>

#include "cpu/amx_matmul.h"
#include "cpu/capability.h"
#include "cpu/winograd_bf16.h"

namespace py = pybind11;

namespace {

// The AMX kernels, or a RuntimeError saying why this machine cannot run them.
const fcn::AmxKernels& amx() {
  std::string why;
  const fcn::AmxKernels* k = fcn::amx_kernels(&why);
  if (!k) throw std::runtime_error("amx_matmul cannot run here: " + why);
  return *k;
}

// The AVX-512 BF16 Winograd layer, or a RuntimeError saying why this machine cannot run it.
const fcn::WinogradBf16Kernels& winograd_bf16() {
  std::string why;
  const fcn::WinogradBf16Kernels* k = fcn::winograd_bf16_kernels(&why);
  if (!k) throw std::runtime_error("winograd_bf16_conv cannot run here: " + why);
  return *k;
}

// A callable with the parameters of the table entry `entry`, running the chosen level's copy.
template <typename... A>
auto chosen(void (*fcn::CpuKernels::*entry)(A...)) {
  return [entry](A... a) { (fcn::cpu_kernels().*entry)(a...); };
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fcnfast C++ CPU head kernels";
  const std::string warning = fcn::choose_cpu_kernels(std::getenv("FCNFAST_CPU_CAPABILITY"));
  if (!warning.empty() && PyErr_WarnEx(PyExc_RuntimeWarning, warning.c_str(), 1) != 0)
    throw py::error_already_set();  // warnings turned into errors

  // Kernels run without the GIL: they touch no Python object.
  auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("preprocess", chosen(&fcn::CpuKernels::preprocess), nogil);
  m.def("overlay", chosen(&fcn::CpuKernels::overlay), nogil);
  m.def("upsample_crop_argmax", chosen(&fcn::CpuKernels::upsample_crop_argmax), nogil);
  m.def("interp_argmax", chosen(&fcn::CpuKernels::interp_argmax), nogil);
  m.def("winograd_input", chosen(&fcn::CpuKernels::winograd_input), nogil);
  m.def("winograd_output", chosen(&fcn::CpuKernels::winograd_output), nogil);
  m.def("lrn", chosen(&fcn::CpuKernels::lrn), nogil);
  m.def("upsample_crop_add", fcn::upsample_crop_add_binding(chosen(&fcn::CpuKernels::upsample_crop_add)),
        nogil);

  m.def("amx_status", [] {
    std::string why;
    const bool ok = fcn::amx_kernels(&why) != nullptr;
    return py::make_tuple(ok, why);
  }, "(whether amx_matmul runs here, why not).");
  m.def("amx_pack_weight", [](uintptr_t w, int64_t n, int64_t k, uintptr_t packed) {
    if (n <= 0 || k <= 0 || n % fcn::kAmxBlock || k % fcn::kAmxBlock)
      throw std::invalid_argument("amx_pack_weight: N and K must be positive multiples of 32");
    amx().pack_weight(w, n, k, packed);
  }, nogil);
  m.def("amx_matmul", [](uintptr_t a, int64_t m, int64_t k, int64_t lda, uintptr_t packed, int64_t n,
                         uintptr_t bias, uintptr_t residual, int64_t ldr, uintptr_t out, int64_t ldo,
                         bool relu, int64_t batch, int64_t a_stride, int64_t out_stride) {
    if (m < 0 || n <= 0 || k <= 0 || n % fcn::kAmxBlock || k % fcn::kAmxBlock || lda < k ||
        ldo < n || (residual && ldr < n) || batch < 1 || (batch > 1 && residual))
      throw std::invalid_argument("amx_matmul: bad sizes (N, K multiples of 32; strides >= them; "
                                  "a batch without a residual)");
    amx().matmul(a, m, k, lda, packed, n, bias, residual, ldr, out, ldo, relu, batch, a_stride,
                 out_stride);
  }, nogil);

  m.def("winograd_bf16_status", [] {
    std::string why;
    const bool ok = fcn::winograd_bf16_kernels(&why) != nullptr;
    return py::make_tuple(ok, why);
  }, "(whether winograd_bf16_conv runs here, why not).");
  m.def("winograd_bf16_pack", [](uintptr_t u, int64_t c, int64_t k, uintptr_t packed) {
    if (c <= 0 || k <= 0 || c % 2 || k % fcn::kWinogradBf16Cols)
      throw std::invalid_argument("winograd_bf16_pack: C must be even, K a positive multiple of 64");
    winograd_bf16().pack(u, c, k, packed);
  }, nogil);
  m.def("winograd_bf16_conv", [](uintptr_t x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t d,
                                 int64_t p, uintptr_t packed, int64_t k, uintptr_t bias, bool relu,
                                 uintptr_t y) {
    if (n < 1 || c <= 0 || k <= 0 || c % 2 || k % fcn::kWinogradBf16Cols || d < 1 || p < 0 ||
        h + 2 * p - 2 * d < 1 || w + 2 * p - 2 * d < 1)
      throw std::invalid_argument("winograd_bf16_conv: bad sizes (C even, K a multiple of 64, a "
                                  "non-empty output)");
    winograd_bf16().conv(x, n, h, w, c, d, p, packed, k, bias, relu, y);
  }, nogil);

  m.def("cpu_capability", [] { return std::string(fcn::cpu_kernels().name); },
        "The instruction-set level whose kernels run: chosen at import, the highest built level "
        "this CPU supports, or a lower one named by FCNFAST_CPU_CAPABILITY.");
  m.def("cpu_capabilities", [] {
    std::vector<std::string> out;
    for (const fcn::CpuKernels* l : fcn::cpu_levels_built())
      if (fcn::cpu_supports(*l)) out.emplace_back(l->name);
    return out;
  }, "The levels built into this module that this CPU supports, lowest first.");
  m.def("cpu_build_flags", [] {
    std::map<std::string, std::string> out;
    for (const fcn::CpuKernels* l : fcn::cpu_levels_built()) out[l->name] = l->flags;
    return out;
  }, "Every level built into this module (supported here or not) → its compiler flags.");
  m.def("cpu_features", &fcn::cpu_feature_names,
        "This CPU's instruction-set features (CPUID, with the OS's register state) among those "
        "the levels are checked for.");
}

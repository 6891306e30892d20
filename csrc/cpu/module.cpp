// fcnfast._C: thin pybind11 bindings of the CPU head kernels (raw pointers, sizes, dtype codes).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu/ops.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fcnfast C++ CPU head kernels";
  // Kernels run without the GIL: they touch no Python object.
  auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("preprocess", &fcn::cpu::preprocess, nogil);
  m.def("overlay", &fcn::cpu::overlay, nogil);
  m.def("upsample_crop_argmax", &fcn::cpu::upsample_crop_argmax, nogil);
  m.def("interp_argmax", &fcn::cpu::interp_argmax, nogil);
  m.def("upsample_crop_add", &fcn::cpu::upsample_crop_add, nogil);
}

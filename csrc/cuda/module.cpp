// fcnfast._cuda: thin pybind11 bindings of the CUDA head kernels (raw pointers, sizes, dtype codes,
// the stream handle). No libtorch: the module builds and imports beside a CPU-only torch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/ops.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fcnfast CUDA head kernels";
  auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("preprocess", &fcn::cuda::preprocess, nogil);
  m.def("overlay", &fcn::cuda::overlay, nogil);
  m.def("upsample_crop_argmax", &fcn::cuda::upsample_crop_argmax, nogil);
  m.def("interp_argmax", &fcn::cuda::interp_argmax, nogil);
  m.def("upsample_crop_add", fcn::upsample_crop_add_binding<uintptr_t>(&fcn::cuda::upsample_crop_add),
        nogil);
}

// The device's fp16/bf16 bit arithmetic (fcn_math.h built with FCN_NO_HOST_F16) against the
// compiler's IEEE _Float16 conversions: every half, and many floats (normals, subnormals, overflow).
#define FCN_NO_HOST_F16 1
#include "fcn_math.h"

#include <cmath>
#include <cstdio>
#include <random>

int main() {
  long bad = 0, checked = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 ref;
    const uint16_t bits = (uint16_t)h;
    std::memcpy(&ref, &bits, 2);
    const float f = fcn::half_to_float(bits);
    if (!(f == (float)ref || (f != f && ref != ref))) ++bad;
    ++checked;
  }
  std::mt19937 g(1);
  for (long i = 0; i < 4000000; ++i) {
    float f;
    if (i % 2) {
      const uint32_t u = g();
      std::memcpy(&f, &u, 4);
    } else {
      f = std::ldexp((float)(g() % 16777216) / 16777216.0f, (int)(g() % 44) - 30);
    }
    if (f != f) continue;
    const _Float16 ref = (_Float16)f;
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, 2);
    if (fcn::float_to_half(f) != ref_bits) ++bad;
    // bf16 keeps 8 significant bits: within half an ulp (2^-8 relative; 2^-134 absolute among
    // subnormals), below the overflow threshold.
    const float b = fcn::bf16_to_float(fcn::float_to_bf16(f));
    const double tol = std::fmax(std::ldexp(std::fabs((double)f), -8), std::ldexp(1.0, -134));
    if (std::fabs(f) < 3.38e38f && std::fabs((double)b - (double)f) > tol) ++bad;
    ++checked;
  }
  std::printf("checked %ld, mismatches %ld\n", checked, bad);
  return bad != 0;
}

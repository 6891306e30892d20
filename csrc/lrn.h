// Caffe's ACROSS_CHANNELS local response normalisation, per value (torch.nn.LocalResponseNorm's
// formula): b = a / (k + alpha · mean of a² over `size` channels centred on a)^beta, the mean's
// window zero-padded at the channel ends and always divided by `size`. float32 arithmetic; shared
// by every implementation (cpu/lrn.cpp).
#pragma once

#include <cmath>

#include "fcn_math.h"

FCN_NAMESPACE_BEGIN

// a / (k + alpha·sumsq/size)^beta. kBeta075: beta is 0.75 (AlexNet, GoogLeNet), taken as x^½·x^¼
// (two square roots, vectorisable where powf is not).
template <bool kBeta075>
FCN_HD float lrn_value(float a, float sumsq, float inv_size, float alpha, float beta, float k) {
  const float base = sumsq * inv_size * alpha + k;
  const float scale = kBeta075 ? std::sqrt(base) * std::sqrt(std::sqrt(base)) : std::pow(base, beta);
  return a / scale;
}

FCN_NAMESPACE_END

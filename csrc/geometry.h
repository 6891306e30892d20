// Geometry of one upsample_crop_add call, as the CPU and CUDA launchers receive it.
#pragma once

#include <cstdint>

namespace fcn {

struct UpsampleAddGeom {
  int64_t n, c, h, w, k, s, oy, ox, out_h, out_w;  // x (N, C, h, w); deconv k/s; crop; output
  int64_t f, hs, ws, soy, sox;                      // skip (N, F, hs, ws) and its crop offset
  float scale;                                      // skip_scale of the fused 1×1 scoring
};

}  // namespace fcn

// Layers of real models, built in C++ (no DSL), for schedule and problem tests.
#pragma once

#include "moejit/spec.h"

namespace moejit::testing {

inline LayerSpec makeLayer(const char *name, int d, int n, int e, int k,
                           Activation act = Activation::SwiGLU) {
  LayerSpec layer;
  layer.name = name;
  layer.experts = e;
  layer.hidden = d;
  layer.intermediate = n;
  layer.activation = act;
  layer.router.topK = k;
  return layer;
}

inline LayerSpec qwen3() { return makeLayer("qwen3", 2048, 768, 128, 8); }
inline LayerSpec sonic7b() { return makeLayer("sonic7b", 1536, 256, 128, 8); }
inline LayerSpec deepseekV3() { return makeLayer("dsv3", 7168, 2048, 256, 8); }

} // namespace moejit::testing

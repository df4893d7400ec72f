// Shared inputs of the spec tests.
#pragma once

#include "moejit/dsl.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace moejit::test {

inline std::string readExample(const std::string &name) {
  std::ifstream in(std::string(MOEJIT_SOURCE_DIR) + "/examples/" + name);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline const std::vector<std::string> &exampleNames() {
  static const std::vector<std::string> names{"olmoe-1b-7b.moe", "qwen3-30b-a3b.moe",
                                              "deepseek-v3.moe", "mixtral-8x7b.moe",
                                              "gpt-oss-20b.moe", "sonicmoe-7b.moe"};
  return names;
}

// A small valid layer built in C++, resolved for sm_90a.
inline LayerSpec smallLayer() {
  LayerSpec layer;
  layer.name = "small";
  layer.experts = 8;
  layer.hidden = 256;
  layer.intermediate = 128;
  layer.router.topK = 2;
  return layer;
}

} // namespace moejit::test

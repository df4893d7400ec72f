// The CUDA C++ kernel templates of templates/moejit/, embedded in the
// library at build time (embed_templates.cmake) so NVRTC needs no files.
#pragma once

#include <span>
#include <string_view>

namespace moejit {

struct TemplateHeader {
  std::string_view name; // include name, e.g. "moejit/layer/router.cuh"
  std::string_view source;
};

std::span<const TemplateHeader> embeddedTemplateHeaders();

} // namespace moejit

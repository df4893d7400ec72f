// libFuzzer target: any input parses or fails with diagnostics, never crashes;
// a spec that parses prints to text that parses back to the same spec.
#include "moejit/dsl.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using namespace moejit;
  const std::string_view text(reinterpret_cast<const char *>(data), size);
  const Target target = Target::fromArch("sm_90a");

  Diagnostics astDiags;
  (void)dumpAst(text, "fuzz.moe", astDiags);
  (void)astDiags.render();

  Diagnostics diags;
  std::optional<Spec> spec = parseSpec(text, "fuzz.moe", target, diags);
  (void)diags.render();
  if (!spec)
    return 0;

  const std::string printed = printSpec(*spec);
  Diagnostics again;
  std::optional<Spec> reparsed = parseSpec(printed, "printed.moe", target, again);
  if (!reparsed || !(*reparsed == *spec)) {
    std::fprintf(stderr, "round trip failed\n--- printed:\n%s\n--- diagnostics:\n%s\n",
                 printed.c_str(), again.render().c_str());
    std::abort();
  }
  for (const LayerSpec &layer : spec->layers)
    (void)specHash(layer);
  return 0;
}

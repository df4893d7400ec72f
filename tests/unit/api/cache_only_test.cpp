// The cache-only runtime (moejit_api_cache_only, no LLVM): always strict, and
// a miss names `moejit precompile`.
#include "moejit/moejit.h"

#include "tests/unit/api/api_test_support.h"

#include <gtest/gtest.h>

namespace moejit {
namespace {

TEST(CacheOnlyRuntime, IsStrictAndNamesPrecompile) {
  testing::ScratchDir dir;
  RuntimeOptions options;
  options.cacheDir = dir.cache();
  options.strict = false; // no compiler: strict regardless
  options.arch = "sm_90a";
  Runtime runtime(options);
  EXPECT_FALSE(runtime.hasCompiler());
  EXPECT_TRUE(runtime.strict());
  const Spec spec = runtime.parseSpec(testing::kTinySpec);
  try {
    runtime.precompile(spec.layers[0]);
    FAIL() << "a miss compiled without a compiler";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("moejit precompile"), std::string::npos) << e.what();
  }
}

} // namespace
} // namespace moejit

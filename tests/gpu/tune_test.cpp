// moejit tune on the GPU: a short search on a small layer stores a checked,
// timed schedule in a new database, and a spec read with that database
// takes it. Skips without a CUDA driver or GPU.
#include "autotune/search.h"
#include "autotune/tuning_db.h"
#include "moejit/dsl.h"
#include "moejit/error.h"
#include "moejit/knobs.h"
#include "runtime/src/device.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/run.h"
#include "runtime/src/tune.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace moejit {
namespace {

TEST(TuneGpu, StoresACheckedScheduleThatSpecsThenTake) {
  try {
    Gpu gpu(Knobs::fromEnvironment().cudaDriver);
  } catch (const Error &e) {
    if (e.kind() == ErrorKind::NoGpu)
      GTEST_SKIP() << e.what();
    throw;
  }
  std::random_device random;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("moejit-tune-test-" + std::to_string(random()));
  std::filesystem::create_directories(dir);
  const std::string spec = (dir / "tiny.moe").string();
  const char *text = "layer tiny {\n  experts = 8\n  hidden = 256\n  intermediate = 128\n"
                     "  router { top_k = 2 }\n  gemm down_proj {}\n}\n";
  std::ofstream(spec) << text;

  TuneOptions options;
  options.file = spec;
  options.db = (dir / "tuned.json").string();
  options.tokens = 512;
  options.measure.iters = 3;
  options.measure.warmup = 1;
  options.budget = 4;
  options.rounds = 1;
  std::ostringstream out, err;
  ASSERT_EQ(tuneCommand(options, out, err), kRunOk) << out.str() << err.str();
  EXPECT_NE(out.str().find("stored"), std::string::npos) << out.str();

  const TuningDb db = TuningDb::load(options.db);
  ASSERT_EQ(db.entries().size(), 1u);
  const TunedSchedule &entry = db.entries()[0];
  EXPECT_GT(entry.tflops, 0);
  EXPECT_EQ(entry.kind, GemmKind::DownProj);
  EXPECT_EQ(entry.tokens, 512);

  Diagnostics diags(text);
  const Target target = runTarget("", Knobs::fromEnvironment());
  const std::optional<Spec> tuned = parseSpec(text, "tiny.moe", target, diags, &db);
  ASSERT_TRUE(tuned) << diags.render();
  EXPECT_EQ(tuned->layers[0].gemms[0].schedule, entry.schedule);
  EXPECT_TRUE(scheduleAccepted(tuned->layers[0], GemmKind::DownProj, target, entry.schedule));
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

} // namespace
} // namespace moejit

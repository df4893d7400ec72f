// CPU tier of the public C++ API: spec helpers and their errors, launch
// argument checks, the Runtime over the disk cache, strict mode, and
// concurrent requests compiling once, the layer forward's errors that need no
// GPU. No GPU needed.
#include "autotune/tuning_db.h"
#include "moejit/moejit.h"

#include "runtime/api/launch_check.h"
#include "runtime/api/layer_module.h"
#include "runtime/src/ptxas.h"
#include "tests/unit/api/api_test_support.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>
#include <vector>

namespace moejit {
namespace {

using testing::kTinySpec;
using testing::ScratchDir;

const Target kHopper = Target::fromArch("sm_90a");

RuntimeOptions optionsFor(const ScratchDir &dir, std::optional<bool> strict = false) {
  RuntimeOptions options;
  options.cacheDir = dir.cache();
  options.strict = strict;
  options.arch = "sm_90a";
  return options;
}

std::string messageOf(const std::function<void()> &call) {
  try {
    call();
  } catch (const Error &e) {
    return e.what();
  }
  ADD_FAILURE() << "no moejit::Error thrown";
  return {};
}

TEST(SpecHelpers, ParseErrorsCarryTheRenderedDiagnostics) {
  const std::string message =
      messageOf([] { parseSpecText("layer x {\n  experts = -3\n}\n", kHopper, "x.moe"); });
  EXPECT_NE(message.find("x.moe:2:"), std::string::npos) << message;
  EXPECT_NE(message.find("error:"), std::string::npos) << message;
}

TEST(SpecHelpers, ParsesTextAndFiles) {
  const Spec spec = parseSpecText(kTinySpec, kHopper);
  ASSERT_EQ(spec.layers.size(), 1u);
  EXPECT_EQ(spec.layers[0].gemms.size(), 2u);
  ScratchDir dir;
  const std::string path = dir.path() + "/tiny.moe";
  std::ofstream(path) << kTinySpec;
  EXPECT_EQ(parseSpecFile(path, kHopper), spec);
  EXPECT_NE(
      messageOf([&] { parseSpecFile(dir.path() + "/none.moe", kHopper); }).find("cannot read"),
      std::string::npos);
}

TEST(SpecHelpers, ResolveChecksSpecsBuiltInCpp) {
  Spec spec;
  LayerSpec layer;
  layer.name = "cpp";
  layer.experts = 8;
  layer.hidden = 256;
  layer.intermediate = 128;
  layer.router.topK = 2;
  spec.layers.push_back(layer);
  resolveSpecOrThrow(spec, kHopper);
  EXPECT_EQ(spec.layers[0].gemms.size(), 6u);
  spec.layers[0].router.topK = 100;
  EXPECT_FALSE(messageOf([&] { resolveSpecOrThrow(spec, kHopper); }).empty());
}

GemmProblem problemOf(GemmKind kind) {
  const Spec spec = parseSpecText("layer all { experts = 8; hidden = 256; intermediate = 128; "
                                  "router { top_k = 2 } }",
                                  kHopper);
  return makeGemmProblem(spec.layers[0], *spec.layers[0].gemm(kind));
}

TEST(LaunchCheck, RequiredOperandsFollowTheAbi) {
  const GemmOperands up = requiredOperands(problemOf(GemmKind::UpProj));
  EXPECT_TRUE(up.auxOut && up.gather);
  EXPECT_FALSE(up.auxIn || up.scale);
  EXPECT_FALSE(up.c); // H is optional: null writes act(H) only
  const GemmOperands down = requiredOperands(problemOf(GemmKind::DownProj));
  EXPECT_TRUE(down.c && down.scale);
  EXPECT_FALSE(down.auxIn || down.auxOut || down.gather);
  const GemmOperands dh = requiredOperands(problemOf(GemmKind::DH));
  EXPECT_TRUE(dh.auxIn && dh.auxOut && dh.gather && dh.scale);
}

TEST(LaunchCheck, RejectsNullMisalignedAndOutOfRangeArguments) {
  const GemmProblem down = problemOf(GemmKind::DownProj);
  alignas(16) static char storage[64];
  GemmArgs args;
  args.a = args.b = args.c = storage;
  args.offsets = reinterpret_cast<const int32_t *>(storage);
  args.scale = reinterpret_cast<const float *>(storage);
  args.totalRows = 7;
  EXPECT_NO_THROW(checkLaunchArgs(down, args, "k"));

  GemmArgs noScale = args;
  noScale.scale = nullptr;
  EXPECT_NE(messageOf([&] { checkLaunchArgs(down, noScale, "k"); }).find("'scale' is null"),
            std::string::npos);
  GemmArgs misaligned = args;
  misaligned.b = storage + 8;
  EXPECT_NE(messageOf([&] { checkLaunchArgs(down, misaligned, "k"); }).find("'b' (0x"),
            std::string::npos);
  GemmArgs vector = args;
  vector.offsets = reinterpret_cast<const int32_t *>(storage + 4); // 4-byte aligned: fine
  EXPECT_NO_THROW(checkLaunchArgs(down, vector, "k"));
  vector.offsets = reinterpret_cast<const int32_t *>(storage + 2);
  EXPECT_NE(messageOf([&] { checkLaunchArgs(down, vector, "k"); }).find("4-byte aligned"),
            std::string::npos);
  GemmArgs negative = args;
  negative.totalRows = -1;
  EXPECT_NE(messageOf([&] { checkLaunchArgs(down, negative, "k"); }).find("negative"),
            std::string::npos);
  GemmArgs huge = args;
  huge.totalRows = int64_t(std::numeric_limits<int32_t>::max()) + 1;
  EXPECT_NE(messageOf([&] { checkLaunchArgs(down, huge, "k"); }).find("INT32_MAX"),
            std::string::npos);
  GemmArgs empty = args;
  empty.totalRows = 0;
  EXPECT_NO_THROW(checkLaunchArgs(down, empty, "k"));
}

size_t cacheEntries(const std::string &directory) {
  size_t entries = 0;
  for (const auto &file : std::filesystem::recursive_directory_iterator(directory))
    entries += file.path().extension() == ".entry";
  return entries;
}

TEST(Runtime, OpenSchedulesComeFromTheTuningDatabase) {
  ScratchDir dir;
  const std::string db = dir.path() + "/tuning.json";
  const Runtime plain(optionsFor(dir));
  const LayerSpec layer = plain.parseSpec(kTinySpec).layers[0];
  Schedule tuned = defaultSchedule(layer, GemmKind::DownProj, plain.target());
  ASSERT_EQ(tuned.stages, 4);
  tuned.stages = 3;
  TuningDb written;
  TunedSchedule entry = tunedScheduleFor(layer, GemmKind::DownProj, plain.target());
  entry.schedule = tuned;
  written.put(entry);
  written.save(db);

  RuntimeOptions options = optionsFor(dir);
  options.tuningDb = db;
  const Runtime runtime(options);
  const Spec spec = runtime.parseSpec(kTinySpec);
  for (const GemmSpec &gemm : spec.layers[0].gemms)
    EXPECT_EQ(gemm.schedule, gemm.kind == GemmKind::DownProj
                                 ? tuned
                                 : defaultSchedule(layer, gemm.kind, runtime.target()));
  Spec built;
  built.layers.push_back(layer);
  built.layers[0].gemms = {GemmSpec{GemmKind::DownProj, Schedule{}}};
  runtime.resolve(built);
  EXPECT_EQ(built.layers[0].gemms[0].schedule, tuned);

  // A database that does not parse stops the runtime with its name.
  std::ofstream(dir.path() + "/broken.json") << "{\"format\": 1, \"entries\": [";
  options.tuningDb = dir.path() + "/broken.json";
  const std::string message = messageOf([&] { Runtime broken(options); });
  EXPECT_NE(message.find("broken.json"), std::string::npos) << message;
}

// An entry compiled without ptxas (MOEJIT_PTXAS=off) gets its cubin on the
// first lookup where ptxas is found, on disk too, so later loads skip the
// driver's JIT.
TEST(Runtime, AnEntryWithoutACubinGetsOneWhereThereIsPtxas) {
  if (!findPtxas(Knobs::fromEnvironment()))
    GTEST_SKIP() << "no ptxas here";
  ScratchDir dir;
  const char *previous = std::getenv("MOEJIT_PTXAS");
  const std::string saved = previous ? previous : "";
  setenv("MOEJIT_PTXAS", "off", 1);
  Target target;
  LayerSpec layer;
  {
    Runtime first(optionsFor(dir));
    layer = first.parseSpec(kTinySpec).layers[0];
    target = first.target();
    EXPECT_TRUE(first.precompile(layer));
  }
  if (previous)
    setenv("MOEJIT_PTXAS", saved.c_str(), 1);
  else
    unsetenv("MOEJIT_PTXAS");
  const std::vector<GemmProblem> problems = layerProblems(layer);
  const CacheKey key = moduleKey(problems, target);
  {
    KernelCache cache(KernelCacheOptions{dir.cache()});
    const ArtifactPtr plain = cache.lookup(key);
    ASSERT_NE(plain, nullptr);
    EXPECT_TRUE(plain->cubin.empty());
    // No compiler: only the cache can answer.
    const CachedModule cached = compileThroughCache(cache, key, problems, target, nullptr);
    EXPECT_FALSE(cached.compiled);
    EXPECT_FALSE(cached.artifact->cubin.empty());
    EXPECT_EQ(cached.artifact->ptx, plain->ptx);
  }
  KernelCache later(KernelCacheOptions{dir.cache()});
  const ArtifactPtr upgraded = later.lookup(key);
  ASSERT_NE(upgraded, nullptr);
  EXPECT_FALSE(upgraded->cubin.empty());
}

TEST(Runtime, TheSmCountOfAnotherGpu) {
  ScratchDir dir;
  RuntimeOptions options = optionsFor(dir);
  options.smCount = 114;
  EXPECT_EQ(Runtime(options).target().smCount, 114);
  options.smCount = -1;
  EXPECT_NE(messageOf([&] { Runtime bad(options); }).find("smCount"), std::string::npos);
}

TEST(Runtime, CompilesOnceThenHitsMemoryAndDisk) {
  ScratchDir dir;
  Runtime first(optionsFor(dir));
  EXPECT_TRUE(first.hasCompiler());
  EXPECT_EQ(first.cacheDirectory(), dir.cache());
  const Spec spec = first.parseSpec(kTinySpec);
  EXPECT_TRUE(first.precompile(spec.layers[0]));
  EXPECT_FALSE(first.precompile(spec.layers[0]));
  RuntimeStats stats = first.stats();
  EXPECT_EQ(stats.compiles, 1u);
  EXPECT_EQ(stats.memoryHits, 1u);

  Runtime second(optionsFor(dir, true));
  EXPECT_TRUE(second.strict());
  EXPECT_FALSE(second.precompile(spec.layers[0]));
  stats = second.stats();
  // The module, and the routing programs precompile stored (NVRTC present);
  // each program's NVRTC-free copy is not read.
  const size_t entries = cacheEntries(dir.cache());
  EXPECT_TRUE(entries == 1 ? stats.diskHits == 1 : stats.diskHits == 3 && entries == 5)
      << stats.diskHits << " disk hits, " << entries << " entries";
  EXPECT_EQ(stats.compiles, 0u);
}

// A layer listing more than up_proj and down_proj gets two modules: all its
// GEMMs (kernels()) and the forward's up/down (layer()); with NVRTC present
// the forward's two routing programs (plain and rounded) are stored too. A
// strict runtime then serves all of it without compiling.
TEST(Runtime, PrecompileAlsoFillsTheForward) {
  ScratchDir dir;
  Runtime first(optionsFor(dir));
  const Spec spec = first.parseSpec("layer wide {\n  experts = 8\n  hidden = 256\n"
                                    "  intermediate = 128\n  router { top_k = 2 }\n"
                                    "  gemm up_proj {}\n  gemm down_proj {}\n  gemm dx {}\n}\n");
  EXPECT_TRUE(first.precompile(spec.layers[0]));
  EXPECT_EQ(first.stats().compiles, 2u);
  const size_t entries = cacheEntries(dir.cache());
  // Two GEMM modules, and with NVRTC both routing programs under two keys each.
  EXPECT_TRUE(entries == 6 || entries == 2) << entries; // 2: no NVRTC here
  Runtime strict(optionsFor(dir, true));
  EXPECT_FALSE(strict.precompile(spec.layers[0]));
  EXPECT_EQ(strict.stats().compiles, 0u);
  EXPECT_EQ(cacheEntries(dir.cache()), entries);
}

TEST(Runtime, StrictModeMissNamesPrecompile) {
  ScratchDir dir;
  Runtime runtime(optionsFor(dir, true));
  const Spec spec = runtime.parseSpec(kTinySpec);
  const std::string message = messageOf([&] { runtime.precompile(spec.layers[0]); });
  EXPECT_NE(message.find("strict mode"), std::string::npos) << message;
  EXPECT_NE(message.find("moejit precompile"), std::string::npos) << message;
  EXPECT_EQ(runtime.stats().compiles, 0u);
}

TEST(Runtime, StrictKnobAndItsOverride) {
  ScratchDir dir;
  ::setenv("MOEJIT_STRICT", "1", 1);
  RuntimeOptions fromKnob = optionsFor(dir, std::nullopt);
  EXPECT_TRUE(Runtime(fromKnob).strict());
  EXPECT_FALSE(Runtime(optionsFor(dir, false)).strict());
  ::unsetenv("MOEJIT_STRICT");
  EXPECT_FALSE(Runtime(fromKnob).strict());
}

TEST(Runtime, BadArchIsAnError) {
  RuntimeOptions options;
  options.cacheDir = "";
  options.arch = "sm_1";
  EXPECT_FALSE(messageOf([&] { Runtime runtime(options); }).empty());
}

TEST(Runtime, ConcurrentRequestsCompileOnce) {
  ScratchDir dir;
  Runtime runtime(optionsFor(dir));
  const Spec spec = runtime.parseSpec(kTinySpec);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] { runtime.precompile(spec.layers[0]); });
  for (std::thread &thread : threads)
    thread.join();
  EXPECT_EQ(runtime.stats().compiles, 1u);
}

TEST(Runtime, KernelsWithoutAGpuSayWhy) {
  ScratchDir dir;
  RuntimeOptions options = optionsFor(dir);
  options.cudaDriver = "libcuda-that-does-not-exist.so";
  Runtime runtime(options);
  EXPECT_FALSE(runtime.hasGpu());
  const Spec spec = runtime.parseSpec(kTinySpec);
  try {
    runtime.kernels(spec.layers[0]);
    FAIL() << "kernels() without a driver returned";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), ErrorKind::NoGpu) << e.what();
  }
  EXPECT_THROW(runtime.allocate(16), Error);
}

TEST(MoeLayer, WithoutAGpuSaysWhy) {
  ScratchDir dir;
  RuntimeOptions options = optionsFor(dir);
  options.cudaDriver = "libcuda-that-does-not-exist.so";
  Runtime runtime(options);
  const Spec spec = runtime.parseSpec(kTinySpec);
  for (bool withRounding : {false, true}) {
    try {
      runtime.layer(spec.layers[0], withRounding);
      FAIL() << "layer() without a driver returned";
    } catch (const Error &e) {
      EXPECT_EQ(e.kind(), ErrorKind::NoGpu) << e.what();
      const std::string message = e.what();
      EXPECT_NE(message.find("Runtime::layer('tiny')"), std::string::npos) << message;
      EXPECT_NE(message.find("needs a GPU"), std::string::npos) << message;
      EXPECT_NE(message.find("libcuda-that-does-not-exist.so"), std::string::npos) << message;
    }
  }
  // A failed build is forgotten: the next call tries again, and fails again.
  EXPECT_THROW(runtime.layer(spec.layers[0]), Error);
}

TEST(MoeLayer, NeedsUpAndDownProjectionBeforeAnyGpu) {
  ScratchDir dir;
  RuntimeOptions options = optionsFor(dir);
  options.cudaDriver = "libcuda-that-does-not-exist.so";
  Runtime runtime(options);
  const Spec spec = runtime.parseSpec("layer up_only {\n"
                                      "  experts = 8\n"
                                      "  hidden = 256\n"
                                      "  intermediate = 128\n"
                                      "  router { top_k = 2 }\n"
                                      "  gemm up_proj {}\n"
                                      "}\n");
  try {
    runtime.layer(spec.layers[0]);
    FAIL() << "layer() of a layer without down_proj returned";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), ErrorKind::Failed) << e.what();
    EXPECT_NE(std::string(e.what()).find("has no down_proj GEMM: the forward needs up_proj and "
                                         "down_proj"),
              std::string::npos)
        << e.what();
  }
}

TEST(Runtime, UnresolvedLayerIsAnError) {
  Runtime runtime(RuntimeOptions{.cacheDir = "", .arch = "sm_90a"});
  LayerSpec raw;
  raw.name = "raw";
  EXPECT_NE(messageOf([&] { runtime.precompile(raw); }).find("resolve"), std::string::npos);
}

} // namespace
} // namespace moejit

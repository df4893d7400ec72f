// compileGemms end to end on the CPU: every family to PTX for sm_80 and
// sm_90a, each stage, and the errors.
#include "compiler/backend/compile.h"
#include "moejit/dsl.h"

#include <gtest/gtest.h>

namespace moejit {
namespace {

LayerSpec smallLayer(Activation act, GateUpLayout layout) {
  LayerSpec layer;
  layer.name = "t";
  layer.experts = 4;
  layer.hidden = 256;
  layer.intermediate = 128;
  layer.activation = act;
  layer.gateUp = layout;
  return layer;
}

std::vector<GemmProblem> allFamilies(const LayerSpec &layer) {
  std::vector<GemmProblem> problems;
  for (GemmKind kind : kAllGemmKinds) {
    GemmSpec gemm;
    gemm.kind = kind;
    gemm.schedule.tile = {64, 64, 32};
    gemm.schedule.stages = 3;
    problems.push_back(makeGemmProblem(layer, gemm));
  }
  return problems;
}

bool contains(const std::string &text, const std::string &what) {
  return text.find(what) != std::string::npos;
}

class CompileFamilies
    : public testing::TestWithParam<std::tuple<const char *, Activation, GateUpLayout>> {};

TEST_P(CompileFamilies, EveryFamilyReachesPtx) {
  auto [arch, act, layout] = GetParam();
  CompileOptions options;
  options.target = Target::fromArch(arch);
  CompileOutput out;
  std::string error;
  const auto problems = allFamilies(smallLayer(act, layout));
  ASSERT_TRUE(compileGemms(problems, options, out, error)) << error;
  EXPECT_TRUE(contains(out.text, std::string(".target ") + arch));
  for (const GemmProblem &p : problems)
    EXPECT_TRUE(contains(out.text, ".entry " + p.kernelName)) << p.kernelName;
  EXPECT_TRUE(contains(out.text, "mma.sync.aligned.m16n8k16"));
  EXPECT_TRUE(contains(out.text, "cp.async.cg.shared.global"));
  EXPECT_TRUE(contains(out.text, "ldmatrix.sync.aligned"));
  EXPECT_TRUE(contains(out.text, ".extern .shared .align 16 .b8 __dynamic_shmem__0[]"));
  EXPECT_EQ(out.kernelNames.size(), problems.size());
}

INSTANTIATE_TEST_SUITE_P(
    ArchsAndActivations, CompileFamilies,
    testing::Values(
        std::tuple{"sm_90a", Activation::SwiGLU, GateUpLayout::Concatenated},
        std::tuple{"sm_80", Activation::SwiGLU, GateUpLayout::Interleaved},
        std::tuple{"sm_80", Activation::GeGLU, GateUpLayout::Concatenated},
        std::tuple{"sm_90a", Activation::GeLU, GateUpLayout::Concatenated},
        std::tuple{"sm_80", Activation::ReLU, GateUpLayout::Concatenated},
        std::tuple{"sm_90a", Activation::None, GateUpLayout::Concatenated}));

// Default schedules of widths that are not multiples of 64 (a 208-wide
// tile once split into no warp layout and failed to compile).
TEST(Compile, DefaultSchedulesOfOddWidthsReachPtx) {
  for (const char *arch : {"sm_80", "sm_90a"}) {
    for (auto [hidden, intermediate] : {std::pair{200, 136}, std::pair{328, 72}}) {
      LayerSpec layer = smallLayer(Activation::SwiGLU, GateUpLayout::Concatenated);
      layer.hidden = hidden;
      layer.intermediate = intermediate;
      CompileOptions options;
      options.target = Target::fromArch(arch);
      std::vector<GemmProblem> problems;
      for (GemmKind kind : kAllGemmKinds)
        problems.push_back(makeGemmProblem(
            layer, GemmSpec{kind, defaultSchedule(layer, kind, options.target)}));
      CompileOutput out;
      std::string error;
      EXPECT_TRUE(compileGemms(problems, options, out, error))
          << arch << " hidden " << hidden << " intermediate " << intermediate << ": " << error;
    }
  }
}

size_t occurrences(const std::string &text, const std::string &what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++count;
  return count;
}

// A module's kernels are compiled on parallel threads and their PTX merged:
// one header and one dynamic shared memory declaration, and each kernel
// exactly as it compiles alone.
TEST(Compile, KernelsCompiledApartMergeIntoOneModule) {
  for (const char *arch : {"sm_80", "sm_90a"}) {
    CompileOptions options;
    options.target = Target::fromArch(arch);
    const auto problems = allFamilies(smallLayer(Activation::SwiGLU, GateUpLayout::Concatenated));
    CompileOutput merged;
    std::string error;
    ASSERT_TRUE(compileGemms(problems, options, merged, error)) << error;
    EXPECT_EQ(occurrences(merged.text, ".version "), 1u) << arch;
    EXPECT_EQ(occurrences(merged.text, ".target "), 1u) << arch;
    EXPECT_EQ(occurrences(merged.text, ".extern .shared"), 1u) << arch;
    ASSERT_EQ(merged.kernelNames.size(), problems.size());
    for (size_t i = 0; i < problems.size(); ++i) {
      EXPECT_EQ(merged.kernelNames[i], problems[i].kernelName);
      CompileOutput alone;
      ASSERT_TRUE(compileGemms({problems[i]}, options, alone, error)) << error;
      const size_t entry = alone.text.find(".visible .entry");
      ASSERT_NE(entry, std::string::npos);
      EXPECT_TRUE(contains(merged.text, alone.text.substr(entry)))
          << arch << " " << problems[i].kernelName;
    }
  }
}

TEST(Compile, EmitsEachStageAndDumpsAfterAPass) {
  auto problems = allFamilies(smallLayer(Activation::SwiGLU, GateUpLayout::Concatenated));
  problems.resize(1);
  CompileOptions options;
  CompileOutput out;
  std::string error;
  options.stage = EmitStage::Mlir;
  ASSERT_TRUE(compileGemms(problems, options, out, error)) << error;
  EXPECT_TRUE(contains(out.text, "moe.grouped_gemm @moejit_t_up_proj"));
  options.stage = EmitStage::Llvm;
  options.dumpAfter = "moe-lower-grouped-gemm";
  ASSERT_TRUE(compileGemms(problems, options, out, error)) << error;
  EXPECT_TRUE(contains(out.text, "define ptx_kernel void @moejit_t_up_proj"));
  EXPECT_TRUE(contains(out.dumps, "gpu.func @moejit_t_up_proj"));
}

TEST(Compile, RejectsBadKernelNamesAndSchedules) {
  auto problems = allFamilies(smallLayer(Activation::SwiGLU, GateUpLayout::Concatenated));
  problems.resize(1);
  CompileOptions options;
  CompileOutput out;
  std::string error;
  problems[0].kernelName = "not a name";
  EXPECT_FALSE(compileGemms(problems, options, out, error));
  EXPECT_TRUE(contains(error, "not a valid PTX identifier")) << error;
  problems[0].kernelName = "ok";
  problems[0].schedule.tile.k = 40;
  EXPECT_FALSE(compileGemms(problems, options, out, error));
  EXPECT_TRUE(contains(error, "tile k must be a multiple of 16")) << error;
}

} // namespace
} // namespace moejit

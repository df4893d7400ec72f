#include "moejit/dsl.h"
#include "tests/unit/spec/test_specs.h"

#include <gtest/gtest.h>

namespace moejit {
namespace {

const Target kHopper = Target::fromArch("sm_90a");

std::optional<Spec> parse(std::string_view text, Diagnostics &diags) {
  return parseSpec(text, "t.moe", kHopper, diags);
}

TEST(Parser, ExamplesParseWithTheirSizes) {
  struct Expected {
    const char *file;
    int hidden, intermediate, experts, topK;
  };
  for (const Expected &e : {Expected{"olmoe-1b-7b.moe", 2048, 1024, 64, 8},
                            Expected{"qwen3-30b-a3b.moe", 2048, 768, 128, 8},
                            Expected{"deepseek-v3.moe", 7168, 2048, 256, 8},
                            Expected{"mixtral-8x7b.moe", 4096, 14336, 8, 2},
                            Expected{"gpt-oss-20b.moe", 2880, 2880, 32, 4},
                            Expected{"sonicmoe-7b.moe", 1536, 256, 128, 8}}) {
    Diagnostics diags;
    auto spec = parseSpec(test::readExample(e.file), e.file, kHopper, diags);
    ASSERT_TRUE(spec) << diags.render();
    const LayerSpec &layer = spec->layers.front();
    EXPECT_EQ(layer.hidden, e.hidden) << e.file;
    EXPECT_EQ(layer.intermediate, e.intermediate) << e.file;
    EXPECT_EQ(layer.experts, e.experts) << e.file;
    EXPECT_EQ(layer.router.topK, e.topK) << e.file;
  }
}

TEST(Parser, ModelOnlyLayerGetsAllSixGemmsInKindOrder) {
  Diagnostics diags;
  auto spec = parse("layer a {\n experts = 8\n hidden = 256\n intermediate = 128\n"
                    " router { top_k = 2 }\n}\n",
                    diags);
  ASSERT_TRUE(spec) << diags.render();
  const LayerSpec &layer = spec->layers[0];
  ASSERT_EQ(layer.gemms.size(), 6u);
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(layer.gemms[i].kind, kAllGemmKinds[i]);
    EXPECT_EQ(layer.gemms[i].schedule, defaultSchedule(layer, kAllGemmKinds[i], kHopper));
  }
  EXPECT_EQ(layer.dtype, DType::BF16);
  EXPECT_EQ(layer.activation, Activation::SwiGLU);
  EXPECT_EQ(layer.gateUp, GateUpLayout::Concatenated);
  EXPECT_EQ(layer.router.scores, ScoreFunc::Softmax);
  EXPECT_TRUE(layer.router.renormalize);
  EXPECT_EQ(layer.rounding.mode, RoundingMode::None);
  EXPECT_EQ(layer.rounding.tile, 0);
}

TEST(Parser, NamedGemmsOnlySortedAndPatched) {
  Diagnostics diags;
  auto spec = parse("layer a { experts = 8; hidden = 256; intermediate = 128\n"
                    "  router { top_k = 2 }\n"
                    "  gemm down_proj { stages = 3; raster = along_n }\n"
                    "  gemm up_proj { tile = 64x128x32; cluster = 2x1 }\n}\n",
                    diags);
  ASSERT_TRUE(spec) << diags.render();
  const LayerSpec &layer = spec->layers[0];
  ASSERT_EQ(layer.gemms.size(), 2u);
  EXPECT_EQ(layer.gemms[0].kind, GemmKind::UpProj);
  EXPECT_EQ(layer.gemms[1].kind, GemmKind::DownProj);
  Schedule up = defaultSchedule(layer, GemmKind::UpProj, kHopper);
  up.tile = {64, 128, 32};
  up.cluster = {2, 1};
  EXPECT_EQ(layer.gemms[0].schedule, up);
  Schedule down = defaultSchedule(layer, GemmKind::DownProj, kHopper);
  down.stages = 3;
  down.raster = Raster::AlongN;
  EXPECT_EQ(layer.gemms[1].schedule, down);
}

TEST(Parser, NewlinesAndSemicolonsSeparateAlike) {
  Diagnostics a, b;
  auto lines = parse("layer a {\nexperts = 8\nhidden = 256\nintermediate = 128\n"
                     "router {\ntop_k = 2\n}\n}\n",
                     a);
  auto semis = parse("layer a { experts = 8; hidden = 256; intermediate = 128; "
                     "router { top_k = 2 } }",
                     b);
  ASSERT_TRUE(lines && semis);
  EXPECT_EQ(*lines, *semis);
}

TEST(Parser, ReportsEveryErrorLocated) {
  Diagnostics diags;
  auto spec = parse("layer a {\n"
                    "  experts = 8\n"
                    "  hiden = 256\n"       // unknown key, suggests hidden
                    "  intermediate = 12\n" // misaligned
                    "  router { top_k = 9 }\n"
                    "}\n",
                    diags);
  EXPECT_FALSE(spec);
  ASSERT_EQ(diags.all().size(), 3u) << diags.render();
  EXPECT_EQ(diags.all()[0].loc.line, 3);
  EXPECT_EQ(diags.all()[0].hint, "did you mean 'hidden'?");
  EXPECT_EQ(diags.all()[1].loc.line, 4);
  EXPECT_EQ(diags.all()[1].loc.col, 18);
  EXPECT_EQ(diags.all()[1].path, "a.intermediate");
  EXPECT_EQ(diags.all()[2].loc.line, 5);
  EXPECT_EQ(diags.all()[2].path, "a.router.top_k");
  EXPECT_EQ(diags.all()[2].loc.file, "t.moe");
}

TEST(Parser, NoCascadeAfterABrokenValue) {
  Diagnostics diags;
  EXPECT_FALSE(parse("layer a {\n experts = 99999999999\n hidden = 256\n intermediate = 128\n"
                     " router { top_k = 2 }\n}\n",
                     diags));
  EXPECT_EQ(diags.all().size(), 1u) << diags.render();
}

TEST(Parser, RenderShowsLineCaretAndHint) {
  Diagnostics diags;
  parse("layer a {\n  experts = 8\n  hidden = 256\n  intermediate = 128\n"
        "  dtype = bf15\n  router { top_k = 2 }\n}\n",
        diags);
  EXPECT_EQ(diags.render(), "t.moe:5:11: error: invalid value 'bf15' for 'dtype'\n"
                            "    dtype = bf15\n"
                            "            ^\n"
                            "  hint: did you mean 'bf16'? valid values: bf16 | fp16\n");
}

TEST(Parser, DumpAstStopsAtSyntaxErrorsOnly) {
  Diagnostics ok;
  auto ast = dumpAst("layer a { experts = 1; top_k = 99 }", "t.moe", ok);
  ASSERT_TRUE(ast) << ok.render();
  EXPECT_EQ(*ast, "File t.moe\n"
                  "  Block layer a @1:1\n"
                  "    Entry experts = 1 (integer) @1:11\n"
                  "    Entry top_k = 99 (integer) @1:24\n");
  Diagnostics bad;
  EXPECT_FALSE(dumpAst("layer a { experts 1 }", "t.moe", bad));
  EXPECT_TRUE(bad.hasErrors());
}

TEST(Parser, NeverCrashesOnTruncatedInput) {
  const std::string text = test::readExample("qwen3-30b-a3b.moe");
  for (std::size_t length = 0; length < text.size(); length += 7) {
    Diagnostics diags;
    parse(std::string_view(text).substr(0, length), diags);
    (void)diags.render();
  }
}

} // namespace
} // namespace moejit

// The --json document of a per-GEMM `moejit run`: the keys, in order, that
// bench scripts read.
#include "runtime/src/run.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <limits>

namespace moejit {
namespace {

KernelRunRecord record(GemmKind kind, bool timed) {
  KernelRunRecord r;
  r.layer = "l0";
  r.problem.kind = kind;
  r.problem.m = 0;
  r.problem.n = 512;
  r.problem.k = 256;
  r.path = KernelPath::Hopper;
  r.rows = 1024;
  r.timed = timed;
  r.result.flops = 2.0 * 512 * 256 * 1024;
  r.result.medianMs = 0.5;
  r.result.c.relativeError = 1e-3;
  r.result.auxOut = Comparison{4e-3, 0};
  r.result.passed = true;
  return r;
}

TEST(RunJson, HoldsTheSchemaKeysInOrder) {
  RunOptions options;
  options.tokens = 128;
  options.seed = 7;
  std::vector<KernelRunRecord> kernels = {record(GemmKind::UpProj, true),
                                          record(GemmKind::DW1, false)};
  kernels[0].result.actOnly = Comparison{5e-3, 0};
  kernels[0].result.actOnlyMs = 0.25;
  kernels[1].path = KernelPath::Portable;
  kernels[1].result.c = Comparison{std::numeric_limits<double>::infinity(), 3};
  kernels[1].result.auxOut.reset();
  kernels[1].result.nonFiniteOutputs = 3;
  kernels[1].result.passed = false;
  const nlohmann::ordered_json doc = nlohmann::ordered_json::parse(
      runResultsJson("NVIDIA H100", "sm_90a", options, "zipf:1.5", kernels));

  std::vector<std::string> keys;
  for (const auto &[key, value] : doc.items())
    keys.push_back(key);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"device", "arch", "tokens", "routing", "seed", "kernels"}));
  EXPECT_EQ(doc["device"], "NVIDIA H100");
  EXPECT_EQ(doc["tokens"], 128);
  EXPECT_EQ(doc["routing"], "zipf:1.5");
  EXPECT_EQ(doc["seed"], 7);
  ASSERT_EQ(doc["kernels"].size(), 2u);

  const auto &up = doc["kernels"][0];
  keys.clear();
  for (const auto &[key, value] : up.items())
    keys.push_back(key);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"layer", "gemm", "path", "rows", "m", "n", "k", "flops",
                                      "median_ms", "tflops", "act_only_median_ms",
                                      "act_only_tflops", "rel_err", "non_finite", "pass"}));
  EXPECT_EQ(up["gemm"], "up_proj");
  EXPECT_EQ(up["path"], "hopper");
  EXPECT_EQ(up["rows"], 1024);
  EXPECT_EQ(up["n"], 512);
  EXPECT_DOUBLE_EQ(up["median_ms"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(up["tflops"].get<double>(), 2.0 * 512 * 256 * 1024 / 0.5e-3 / 1e12);
  EXPECT_DOUBLE_EQ(up["act_only_median_ms"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(up["act_only_tflops"].get<double>(), 2.0 * 512 * 256 * 1024 / 0.25e-3 / 1e12);
  EXPECT_DOUBLE_EQ(up["rel_err"].get<double>(), 5e-3); // the worst of C and aux_out (both runs)
  EXPECT_EQ(up["non_finite"], 0);
  EXPECT_EQ(up["pass"], true);

  const auto &dw1 = doc["kernels"][1];
  EXPECT_EQ(dw1["gemm"], "dw1");
  EXPECT_EQ(dw1["path"], "portable");
  EXPECT_TRUE(dw1["median_ms"].is_null()); // not timed
  EXPECT_TRUE(dw1["tflops"].is_null());
  EXPECT_TRUE(dw1["act_only_median_ms"].is_null()); // not an up-projection
  EXPECT_TRUE(dw1["rel_err"].is_null()); // infinite: NaN in the outputs
  EXPECT_EQ(dw1["non_finite"], 3);
  EXPECT_EQ(dw1["pass"], false);
}

} // namespace
} // namespace moejit

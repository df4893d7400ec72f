// planGemmCheck: what a GPU check makes, uploads and reads back. Every
// example but DeepSeek-V3 is checked whole, as before; DeepSeek-V3's 7.5 and
// 15 GB weights and weight gradients are made by expert and read back by rows.
#include "moejit/dsl.h"
#include "moejit/error.h"
#include "runtime/src/half.h"
#include "runtime/src/random.h"
#include "runtime/src/reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

namespace moejit {
namespace {

constexpr int64_t kGiB = int64_t(1) << 30;

Spec readExample(const std::string &name) {
  std::ifstream in(std::string(MOEJIT_SOURCE_DIR) + "/examples/" + name);
  std::stringstream text;
  text << in.rdbuf();
  Diagnostics diags(text.str());
  std::optional<Spec> spec = parseSpec(text.str(), name, Target::fromArch("sm_90a"), diags);
  EXPECT_TRUE(spec) << diags.render();
  return spec ? *spec : Spec{};
}

LayerSpec smallLayer(int experts = 4) {
  LayerSpec layer;
  layer.name = "small";
  layer.experts = experts;
  layer.hidden = 64;
  layer.intermediate = 32;
  layer.activation = Activation::SwiGLU;
  layer.router.topK = 2;
  return layer;
}

std::vector<uint16_t> slotOf(const HostOperands &ops, OperandSlot slot) {
  return slot == OperandSlot::A ? ops.a : slot == OperandSlot::B ? ops.b : ops.auxIn;
}

TEST(RandomOperands, AnyRangeHasTheValuesOfTheWhole) {
  const LayerSpec layer = smallLayer();
  const GroupedRows rows = groupByExpert(routeUniform(37, layer.experts, 2, 5));
  for (GemmKind kind : kAllGemmKinds) {
    const HostOperands whole = randomOperands(kind, layer, rows, 9);
    for (OperandSlot slot : {OperandSlot::A, OperandSlot::B, OperandSlot::AuxIn}) {
      const std::vector<uint16_t> values = slotOf(whole, slot);
      if (values.size() < 10)
        continue;
      const int64_t first = 7, count = static_cast<int64_t>(values.size()) - 10;
      std::vector<uint16_t> part(count);
      fillRandomOperand(kind, layer, rows, 9, slot, first, part);
      EXPECT_TRUE(std::equal(part.begin(), part.end(), values.begin() + first))
          << toString(kind) << " slot " << int(slot);
    }
  }
}

// The values runs have always used (stream kind*16 + slot, index = element),
// so checks that made whole operands before see the same inputs.
TEST(RandomOperands, KeepTheirStreams) {
  const LayerSpec layer = smallLayer();
  const GroupedRows rows = groupByExpert(routeUniform(8, layer.experts, 2, 1));
  const HostOperands dh = randomOperands(GemmKind::DH, layer, rows, 42);
  auto expected = [&](OperandSlot slot, int64_t i, double bound) {
    const uint64_t stream = uint64_t(GemmKind::DH) * 16 + uint64_t(slot);
    return floatToBf16(static_cast<float>(
        (2.0 * unitInterval(counterRandom(42, stream, uint64_t(i))) - 1.0) * bound));
  };
  for (int64_t i : {0, 5, 99}) {
    EXPECT_EQ(dh.a[i], expected(OperandSlot::A, i, 1.0));
    EXPECT_EQ(dh.b[i], expected(OperandSlot::B, i, 1.0 / std::sqrt(64.0))); // W2, reduction d
    EXPECT_EQ(dh.auxIn[i], expected(OperandSlot::AuxIn, i, 1.5));
  }
}

// A window of B (some experts' weights) gives the rows of those experts the
// same reference as the whole B, and a row of another expert throws.
TEST(Reference, ReadsAWindowOfTheWeights) {
  const LayerSpec layer = smallLayer();
  const GroupedRows rows = groupByExpert(routeUniform(40, layer.experts, 2, 3));
  for (GemmKind kind : {GemmKind::UpProj, GemmKind::DownProj, GemmKind::DH, GemmKind::DX}) {
    const HostOperands whole = randomOperands(kind, layer, rows, 4);
    const int64_t expertElements = operandLayout(kind, layer, rows).bElements / layer.experts;
    HostOperands window = whole;
    window.bFirst = 1 * expertElements; // experts 1 and 2
    window.b.assign(whole.b.begin() + window.bFirst, whole.b.begin() + 3 * expertElements);
    std::vector<int64_t> inside(rows.offsets[3] - rows.offsets[1]);
    std::iota(inside.begin(), inside.end(), int64_t(rows.offsets[1]));
    ASSERT_FALSE(inside.empty());
    const ReferenceOutput expected = referenceGemm(kind, layer, rows, whole, inside);
    const ReferenceOutput got = referenceGemm(kind, layer, rows, window, inside);
    EXPECT_EQ(got.c, expected.c) << toString(kind);
    EXPECT_EQ(got.auxOut, expected.auxOut) << toString(kind);
    ASSERT_GT(rows.counts[0], 0);
    const std::vector<int64_t> outside = {0};
    EXPECT_THROW(referenceGemm(kind, layer, rows, window, outside), Error) << toString(kind);
  }
}

TEST(Sampling, CapsTheCheckedOutputElements) {
  const LayerSpec layer = smallLayer(16);
  const GroupedRows rows = groupByExpert(routeZipf(300, 16, 2, 1.5, 2));
  for (GemmKind kind : kAllGemmKinds) {
    const OperandLayout l = operandLayout(kind, layer, rows);
    const int64_t cap = 40 * l.cColumns;
    const std::vector<int64_t> sample =
        sampleOutputRows(kind, layer, rows, int64_t(1) << 40, 1, cap);
    const int64_t minimum = l.varlenK ? layer.experts
                                      : std::count_if(rows.counts.begin(), rows.counts.end(),
                                                      [](int32_t c) { return c > 0; });
    EXPECT_LE(int64_t(sample.size()), std::max<int64_t>(40, minimum)) << toString(kind);
    EXPECT_GE(int64_t(sample.size()), minimum) << toString(kind);
    EXPECT_TRUE(std::is_sorted(sample.begin(), sample.end()));
  }
}

struct Routed {
  int64_t tokens;
  const char *routing;
};

GroupedRows routeFor(const LayerSpec &layer, const Routed &r, uint64_t seed) {
  return groupByExpert(
      route(RoutingMethod::parse(r.routing), r.tokens, layer.experts, layer.router.topK, seed));
}

// Every example but DeepSeek-V3 keeps the checks it had: all inputs made
// whole, all outputs read back whole, the same sample of rows.
TEST(CheckPlan, SmallerExamplesAreCheckedWhole) {
  const CheckBudget budget;
  for (const char *name : {"olmoe-1b-7b.moe", "qwen3-30b-a3b.moe", "mixtral-8x7b.moe",
                           "gpt-oss-20b.moe", "sonicmoe-7b.moe"}) {
    const Spec spec = readExample(name);
    for (const LayerSpec &layer : spec.layers)
      for (const Routed &r : {Routed{0, "uniform"}, Routed{1, "uniform"}, Routed{127, "uniform"},
                              Routed{4096, "uniform"}, Routed{127, "zipf:1.5"}}) {
        const GroupedRows rows = routeFor(layer, r, 7);
        for (const GemmSpec &gemm : layer.gemms) {
          const GemmCheckPlan plan = planGemmCheck(gemm.kind, layer, rows, budget, 3);
          SCOPED_TRACE(std::string(name) + " " + std::string(toString(gemm.kind)) +
                       " T=" + std::to_string(r.tokens) + " " + r.routing);
          EXPECT_FALSE(plan.weightsByExpert);
          EXPECT_FALSE(plan.outputsByRows);
          EXPECT_EQ(plan.checkedRows,
                    sampleOutputRows(gemm.kind, layer, rows, budget.maxReferenceMacs, 3));
          const OperandLayout &l = plan.layout;
          EXPECT_EQ(plan.readBackBytes, l.cRows * l.cColumns * 2 + l.auxOutRows * l.auxOutColumns *
                                                                       (l.auxOutIsFloat ? 4 : 2));
        }
      }
  }
}

TEST(CheckPlan, DeepSeekMakesOnlyWhatItChecks) {
  const CheckBudget budget;
  const Spec spec = readExample("deepseek-v3.moe");
  ASSERT_EQ(spec.layers.size(), 1u);
  const LayerSpec &layer = spec.layers[0];
  for (const Routed &r : {Routed{0, "uniform"}, Routed{1, "uniform"}, Routed{127, "uniform"},
                          Routed{4096, "uniform"}, Routed{4096, "zipf:1.5"}}) {
    const GroupedRows rows = routeFor(layer, r, 11);
    for (GemmKind kind : kAllGemmKinds) {
      SCOPED_TRACE(std::string(toString(kind)) + " T=" + std::to_string(r.tokens) + " " +
                   r.routing);
      const GemmCheckPlan plan = planGemmCheck(kind, layer, rows, budget, 5);
      const OperandLayout &l = plan.layout;
      // Never more than one multi-GB buffer on the host, and never the
      // weights or weight gradients whole.
      EXPECT_LT(plan.peakHostBytes, 2 * kGiB);
      if (l.varlenK) {
        // dW1 / dW2: every expert's gradient read back at a sample of rows,
        // empty experts included (they must be written, as zeros).
        EXPECT_FALSE(plan.weightsByExpert);
        EXPECT_TRUE(plan.outputsByRows);
        const int64_t m = l.cRows / layer.experts;
        std::vector<bool> covered(layer.experts, false);
        for (int64_t row : plan.checkedRows)
          covered[row / m] = true;
        EXPECT_EQ(std::count(covered.begin(), covered.end(), true), layer.experts);
        EXPECT_LE(int64_t(plan.checkedRows.size()) * l.cColumns,
                  std::max<int64_t>(budget.maxReadBackElements, layer.experts * l.cColumns));
        EXPECT_EQ(plan.readBackBytes, int64_t(plan.checkedRows.size()) * l.cColumns * 2);
        continue;
      }
      // Varlen-M: weights of exactly the experts with rows, in chunks.
      EXPECT_TRUE(plan.weightsByExpert);
      EXPECT_FALSE(plan.outputsByRows); // at most 470 MB for T <= 4096
      const int64_t expertBytes = l.bElements / layer.experts * 2;
      std::vector<bool> made(layer.experts, false);
      int last = -1;
      for (const ExpertRange &chunk : plan.weightChunks) {
        EXPECT_LE(last, chunk.first);
        EXPECT_LT(chunk.first, chunk.last);
        EXPECT_LE((chunk.last - chunk.first) * expertBytes,
                  std::max(budget.maxWeightChunkBytes, expertBytes));
        for (int e = chunk.first; e < chunk.last; ++e)
          made[e] = true;
        last = chunk.last;
      }
      for (int e = 0; e < layer.experts; ++e)
        EXPECT_EQ(made[e], rows.counts[e] > 0) << "expert " << e;
      for (int64_t row : plan.checkedRows)
        EXPECT_TRUE(made[rows.expertOfRow(row)]);
      const int64_t expertsWithRows = std::count(made.begin(), made.end(), true);
      const int64_t activations = (l.aElements + l.auxInElements) * 2;
      EXPECT_LE(plan.uploadedBytes,
                activations + expertsWithRows * expertBytes + (1 << 20) + rows.rows() * 8);
    }
  }
}

// T=1 touches 8 of 256 experts: what is made follows the routing, not E.
TEST(CheckPlan, DeepSeekOneTokenMakesEightExperts) {
  const Spec spec = readExample("deepseek-v3.moe");
  const LayerSpec &layer = spec.layers[0];
  const GroupedRows rows = routeFor(layer, Routed{1, "uniform"}, 1);
  const GemmCheckPlan up = planGemmCheck(GemmKind::UpProj, layer, rows, CheckBudget{}, 1);
  int64_t experts = 0;
  for (const ExpertRange &chunk : up.weightChunks)
    experts += chunk.last - chunk.first;
  EXPECT_EQ(experts, 8);
  EXPECT_LT(up.uploadedBytes, kGiB / 2); // 8 x 58.7 MB of W1, not 15 GB
}

} // namespace
} // namespace moejit

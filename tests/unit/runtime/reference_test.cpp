#include "runtime/src/half.h"
#include "runtime/src/reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

namespace moejit {
namespace {

LayerSpec tinyLayer(Activation act, GateUpLayout layout = GateUpLayout::Concatenated) {
  LayerSpec layer;
  layer.name = "tiny";
  layer.experts = 2;
  layer.hidden = 2;
  layer.intermediate = 2;
  layer.activation = act;
  layer.gateUp = layout;
  layer.router.topK = 1;
  return layer;
}

std::vector<uint16_t> bf16(std::initializer_list<float> values) {
  std::vector<uint16_t> out;
  for (float v : values)
    out.push_back(floatToBf16(v));
  return out;
}

// Token 0 -> expert 1 (score 0.5), token 1 -> expert 0 (score 2).
GroupedRows crossedRouting() {
  TokenChoices choices;
  choices.tokens = 2;
  choices.experts = 2;
  choices.topK = 1;
  choices.expert = {1, 0};
  choices.score = {0.5f, 2.0f};
  return groupByExpert(choices);
}

std::vector<int64_t> allRows(int64_t count) {
  std::vector<int64_t> rows(count);
  std::iota(rows.begin(), rows.end(), 0);
  return rows;
}

TEST(Reference, UpProjHandComputed) {
  const LayerSpec layer = tinyLayer(Activation::None);
  const GroupedRows rows = crossedRouting(); // row 0: token 1 (e0), row 1: token 0 (e1)
  HostOperands ops;
  ops.a = bf16({1, 2, 3, 4});                      // X
  ops.b = bf16({1, 0, 0, 1, /* e1 */ 0, 1, 1, 0}); // W1[0] = I, W1[1] = swap
  const ReferenceOutput out = referenceGemm(GemmKind::UpProj, layer, rows, ops, allRows(2));
  EXPECT_EQ(out.c, (std::vector<double>{3, 4, 2, 1}));
  EXPECT_TRUE(out.auxOut.empty());
}

TEST(Reference, DownProjScalesRows) {
  const LayerSpec layer = tinyLayer(Activation::None);
  const GroupedRows rows = crossedRouting();
  HostOperands ops;
  ops.a = bf16({1, 2, 3, 4});                      // act [R][n]
  ops.b = bf16({1, 0, 0, 1, /* e1 */ 2, 0, 0, 2}); // W2[e] [n][d]
  const ReferenceOutput out = referenceGemm(GemmKind::DownProj, layer, rows, ops, allRows(2));
  // row 0: expert 0, score 2 -> 2*[1,2]; row 1: expert 1, score 0.5 -> 0.5*2*[3,4]
  EXPECT_EQ(out.c, (std::vector<double>{2, 4, 3, 4}));
}

TEST(Reference, SwiGluForwardBothLayouts) {
  for (GateUpLayout layout : {GateUpLayout::Concatenated, GateUpLayout::Interleaved}) {
    LayerSpec layer = tinyLayer(Activation::SwiGLU, layout);
    layer.intermediate = 1; // u = 2: one gate and one up column
    const GroupedRows rows = crossedRouting();
    HostOperands ops;
    ops.a = bf16({1, 0, 0, 1}); // X = I
    // W1[e] [d=2][u=2]; expert 0 = [[1.5, -2], [0.5, 0.25]]
    ops.b = bf16({1.5f, -2, 0.5f, 0.25f, 0, 0, 0, 0});
    const ReferenceOutput out = referenceGemm(GemmKind::UpProj, layer, rows, ops, {{0}});
    // Row 0 is token 1: H = X[1] W1[0] = [0.5, 0.25].
    ASSERT_EQ(out.c, (std::vector<double>{0.5, 0.25}));
    const double gate = 0.5, up = 0.25; // both layouts put the gate first for n = 1
    ASSERT_EQ(out.auxOut.size(), 1u);
    EXPECT_DOUBLE_EQ(out.auxOut[0], gate / (1 + std::exp(-gate)) * up);
  }
}

TEST(Reference, GateUpLayoutsPickDifferentColumns) {
  LayerSpec layer = tinyLayer(Activation::ReLU);
  layer.activation = Activation::SwiGLU;
  layer.intermediate = 2; // u = 4
  const GroupedRows rows = crossedRouting();
  HostOperands ops;
  ops.a = bf16({1, 0, 0, 1});
  // Expert 0's W1 row 1 (token 1 = X row [0, 1]) is H = [1, 2, 3, 4].
  ops.b = bf16({0, 0, 0, 0, 1, 2, 3, 4, /* e1 */ 0, 0, 0, 0, 0, 0, 0, 0});
  auto silu = [](double x) { return x / (1 + std::exp(-x)); };
  layer.gateUp = GateUpLayout::Concatenated; // gates 1, 2; ups 3, 4
  ReferenceOutput out = referenceGemm(GemmKind::UpProj, layer, rows, ops, {{0}});
  EXPECT_DOUBLE_EQ(out.auxOut[0], silu(1) * 3);
  EXPECT_DOUBLE_EQ(out.auxOut[1], silu(2) * 4);
  layer.gateUp = GateUpLayout::Interleaved; // gates 1, 3; ups 2, 4
  out = referenceGemm(GemmKind::UpProj, layer, rows, ops, {{0}});
  EXPECT_DOUBLE_EQ(out.auxOut[0], silu(1) * 2);
  EXPECT_DOUBLE_EQ(out.auxOut[1], silu(3) * 4);
}

TEST(Reference, ActivationDerivativesMatchFiniteDifferences) {
  for (Activation act : {Activation::SwiGLU, Activation::GeGLU, Activation::GeLU, Activation::ReLU,
                         Activation::None})
    for (double x : {-2.3, -0.7, 0.3, 1.1, 2.9}) {
      const double h = 1e-6;
      const double numeric = (activationValue(act, x + h) - activationValue(act, x - h)) / (2 * h);
      EXPECT_NEAR(activationDerivative(act, x), numeric, 1e-6) << int(act) << " at " << x;
    }
}

// dH = s * d<dA, act(H)>/dH and dS = <dA, act(H)>, for every activation and
// layout, checked by finite differences of the forward activation.
TEST(Reference, DhIsTheGradientOfTheForward) {
  for (Activation act : {Activation::SwiGLU, Activation::GeGLU, Activation::GeLU, Activation::ReLU,
                         Activation::None})
    for (GateUpLayout layout : {GateUpLayout::Concatenated, GateUpLayout::Interleaved}) {
      LayerSpec layer = tinyLayer(act, layout);
      layer.intermediate = 2;
      const int64_t u = layer.upColumns();
      const GroupedRows rows = crossedRouting();
      HostOperands ops;
      ops.a = bf16({0.5f, -1, 0.75f, 0.25f});                          // dO [T][d]
      ops.b = bf16({1, 0.5f, -0.5f, 1, /* e1 */ 0.25f, 1, 1, -0.75f}); // W2 [E][n][d]
      std::vector<float> h = {0.625f, -1.25f, 0.375f, 1.5f, -0.5f, 0.875f, 1.125f, -0.25f};
      for (float v : h)
        ops.auxIn.push_back(floatToBf16(v));
      const ReferenceOutput out = referenceGemm(GemmKind::DH, layer, rows, ops, allRows(2));
      for (int64_t r = 0; r < 2; ++r) {
        const int e = rows.expertOfRow(r);
        const int64_t token = rows.gather[r];
        double dA[2];
        for (int j = 0; j < 2; ++j)
          dA[j] = bf16ToFloat(ops.a[token * 2 + 0]) * bf16ToFloat(ops.b[e * 4 + j * 2 + 0]) +
                  bf16ToFloat(ops.a[token * 2 + 1]) * bf16ToFloat(ops.b[e * 4 + j * 2 + 1]);
        auto phi = [&](const std::vector<double> &row) { // <dA, act(row)>
          double sum = 0;
          for (int j = 0; j < 2; ++j) {
            const int64_t gc = layout == GateUpLayout::Concatenated ? j : 2 * j;
            const int64_t uc = layout == GateUpLayout::Concatenated ? 2 + j : 2 * j + 1;
            const double a = isGated(act) ? activationValue(act, row[gc]) * row[uc]
                                          : activationValue(act, row[j]);
            sum += dA[j] * a;
          }
          return sum;
        };
        std::vector<double> row(h.begin() + r * u, h.begin() + (r + 1) * u);
        EXPECT_NEAR(out.auxOut[r], phi(row), 1e-12);
        for (int64_t c = 0; c < u; ++c) {
          std::vector<double> plus = row, minus = row;
          plus[c] += 1e-6;
          minus[c] -= 1e-6;
          const double numeric = rows.scale[r] * (phi(plus) - phi(minus)) / 2e-6;
          EXPECT_NEAR(out.c[r * u + c], numeric, 1e-6)
              << toString(act) << " " << toString(layout) << " row " << r << " col " << c;
        }
      }
    }
}

TEST(Reference, WeightGradientsAreZeroForEmptyExperts) {
  const LayerSpec layer = tinyLayer(Activation::None);
  TokenChoices choices;
  choices.tokens = 2;
  choices.experts = 2;
  choices.topK = 1;
  choices.expert = {1, 1};
  choices.score = {0.5f, 2.0f};
  const GroupedRows rows = groupByExpert(choices);
  HostOperands ops;
  ops.a = bf16({1, 2, 3, 4}); // X [T][d]
  ops.b = bf16({1, 1, 0, 2}); // dH [R][u]: row 0 = token 0, row 1 = token 1
  const ReferenceOutput dw1 = referenceGemm(GemmKind::DW1, layer, rows, ops, allRows(4));
  // dW1[1] = X^T dH = [[1,3],[2,4]] [[1,1],[0,2]] = [[1,7],[2,10]]
  EXPECT_EQ(dw1.c, (std::vector<double>{0, 0, 0, 0, 1, 7, 2, 10}));

  HostOperands ops2;
  ops2.a = bf16({1, 2, 3, 4}); // act [R][n]
  ops2.b = bf16({1, 1, 0, 2}); // dO [T][d]
  const ReferenceOutput dw2 = referenceGemm(GemmKind::DW2, layer, rows, ops2, allRows(4));
  // dW2[1] = act^T (s dO) = [[1,3],[2,4]] [[0.5,0.5],[0,4]] = [[0.5,12.5],[1,17]]
  EXPECT_EQ(dw2.c, (std::vector<double>{0, 0, 0, 0, 0.5, 12.5, 1, 17}));
}

TEST(Reference, DxUsesW1Transposed) {
  const LayerSpec layer = tinyLayer(Activation::None);
  const GroupedRows rows = crossedRouting();
  HostOperands ops;
  ops.a = bf16({1, 2, 3, 4});                      // dH [R][u]
  ops.b = bf16({1, 2, 3, 4, /* e1 */ 0, 1, 0, 0}); // W1 [E][d][u]
  const ReferenceOutput out = referenceGemm(GemmKind::DX, layer, rows, ops, allRows(2));
  // row 0 (e0): [1,2] W1[0]^T = [1*1+2*2, 1*3+2*4] = [5, 11]; row 1 (e1): [3,4] -> [4, 0]
  EXPECT_EQ(out.c, (std::vector<double>{5, 11, 4, 0}));
}

TEST(Reference, SamplingCoversEveryExpertWithinBudget) {
  LayerSpec layer = tinyLayer(Activation::SwiGLU);
  layer.experts = 16;
  layer.hidden = 64;
  layer.intermediate = 32;
  layer.router.topK = 2;
  const GroupedRows rows = groupByExpert(routeZipf(500, 16, 2, 1.0, 3));
  for (GemmKind kind : kAllGemmKinds) {
    const int64_t budget = 1; // forces the minimum: one row per expert with rows
    const std::vector<int64_t> sample = sampleOutputRows(kind, layer, rows, budget, 1);
    ASSERT_TRUE(std::is_sorted(sample.begin(), sample.end()));
    ASSERT_EQ(std::adjacent_find(sample.begin(), sample.end()), sample.end());
    const OperandLayout l = operandLayout(kind, layer, rows);
    std::vector<bool> covered(layer.experts, false);
    for (int64_t row : sample)
      covered[l.varlenK ? row / (l.cRows / layer.experts) : rows.expertOfRow(row)] = true;
    for (int e = 0; e < layer.experts; ++e) {
      if (rows.counts[e] > 0 || l.varlenK) {
        EXPECT_TRUE(covered[e]) << toString(kind) << " expert " << e;
      }
    }
    const std::vector<int64_t> all = sampleOutputRows(kind, layer, rows, int64_t(1) << 40, 1);
    EXPECT_EQ(int64_t(all.size()), l.cRows);
  }
}

TEST(Reference, RandomOperandsAreFreshAndBounded) {
  LayerSpec layer = tinyLayer(Activation::SwiGLU);
  layer.hidden = 64;
  layer.intermediate = 32;
  const GroupedRows rows = groupByExpert(routeUniform(10, 2, 1, 1));
  const HostOperands a = randomOperands(GemmKind::UpProj, layer, rows, 1);
  const HostOperands b = randomOperands(GemmKind::UpProj, layer, rows, 2);
  EXPECT_NE(a.a, b.a);
  int zeros = 0;
  for (uint16_t bits : a.b) {
    const float v = bf16ToFloat(bits);
    EXPECT_LE(std::fabs(v), 1.0f / 8 + 1e-3f); // 1/sqrt(d)
    zeros += v == 0;
  }
  EXPECT_LT(zeros, 5);
}

TEST(Compare, RelativeErrorAndNonFinite) {
  const std::vector<double> expected = {3, 4};
  const std::vector<float> exact = {0, 0, 3, 4};
  EXPECT_EQ(compareRows(expected, std::span<const float>(exact), 2, {{1}}).relativeError, 0);
  const std::vector<float> off = {0, 0, 3, 4.5f};
  EXPECT_DOUBLE_EQ(compareRows(expected, std::span<const float>(off), 2, {{1}}).relativeError, 0.1);
  const std::vector<uint16_t> poisoned = {0, 0, floatToBf16(3), 0xffff};
  const Comparison c =
      compareRows(expected, std::span<const uint16_t>(poisoned), DType::BF16, 2, {{1}});
  EXPECT_EQ(c.nonFinite, 1);
  EXPECT_TRUE(std::isinf(c.relativeError));
  const std::vector<double> zeros = {0, 0};
  EXPECT_EQ(compareRows(zeros, std::span<const float>(exact), 2, {{0}}).relativeError, 0);
}

} // namespace
} // namespace moejit

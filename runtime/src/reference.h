// CPU float64 references of the six grouped-GEMM families, written from the
// table in docs/kernel-abi.md (deliberately not from GemmProblem, so they
// check makeGemmProblem and the compiler rather than restate them), and the
// host-side operands they read.
#pragma once

#include "moejit/spec.h"
#include "runtime/src/routing.h"

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace moejit {

// The ABI slots of one family for a layer and a routing (element counts).
// C is viewed as a matrix: R x columns for varlen-M families, the stacked
// per-expert gradients (E*m) x columns for varlen-K ones.
struct OperandLayout {
  bool varlenK = false;
  int64_t aElements = 0, bElements = 0, auxInElements = 0;
  int64_t cRows = 0, cColumns = 0;
  // aux_out: up_proj's act(H) [R][n] in the dtype (absent for activation
  // none), dh's dS [R] in float; auxOutRows == 0 when unused.
  int64_t auxOutRows = 0, auxOutColumns = 0;
  bool auxOutIsFloat = false;
  // Reduction length of the GEMM for varlen-M families (per output row).
  int64_t reduction = 0;
};

OperandLayout operandLayout(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows);

// Inputs as the kernel reads them: the dtype's 16-bit patterns. `b` may hold
// a window of B only, elements [bFirst, bFirst + b.size()): the weights of
// some experts, for references of rows of those experts.
struct HostOperands {
  std::vector<uint16_t> a, b, auxIn;
  int64_t bFirst = 0;
};

// The input slots; the values are the random stream numbers of each.
enum class OperandSlot { A = 0, B = 1, AuxIn = 3 };

// Fresh seeded random inputs: activations uniform in (-1, 1) (H for dh in
// (-1.5, 1.5), to exercise the activation's curvature), weights uniform in
// (-1, 1) / sqrt(the GEMM's reduction length) so outputs stay O(1). The
// values do not depend on the host's thread count.
HostOperands randomOperands(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                            uint64_t seed);
// Elements [first, first + out.size()) of one slot of randomOperands, the
// same values, for callers that make a slot piece by piece.
void fillRandomOperand(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                       uint64_t seed, OperandSlot slot, int64_t first, std::span<uint16_t> out);

// Multiply-accumulates the reference spends on one output row of C.
int64_t referenceMacs(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                      int64_t outputRow);

// The output rows of C to check, sorted: all of them when their reference
// costs at most `maxMacs` (a row costs its multiply-accumulates plus its
// output elements), else a seeded random subset within that budget holding
// at least one row of every expert that has rows (varlen-M: a grouped row of
// it) or of every expert (varlen-K: a row of its gradient, zero for an empty
// expert); that minimum can exceed the budget. `maxOutputElements` caps the
// checked output elements (rows times columns) the same way.
std::vector<int64_t>
sampleOutputRows(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows, int64_t maxMacs,
                 uint64_t seed, int64_t maxOutputElements = std::numeric_limits<int64_t>::max());

// What a GPU check of one GEMM may spend on the host.
struct CheckBudget {
  // Reference work per GEMM (sampleOutputRows' maxMacs).
  int64_t maxReferenceMacs = 2'000'000'000;
  // Buffers up to this size are made, uploaded, read back and scanned whole.
  // Above it (DeepSeek-V3's 7.5 and 15 GB weights and weight gradients), B
  // of a varlen-M family is made only for the experts that have rows, and an
  // output is read back only at its checked rows.
  int64_t maxWholeBufferBytes = int64_t(4) << 30;
  // Checked elements of an output read back by rows.
  int64_t maxReadBackElements = int64_t(1) << 26;
  // Weights made on the host at once when B is made by expert.
  int64_t maxWeightChunkBytes = int64_t(1) << 30;
};

// Experts [first, last).
struct ExpertRange {
  int first = 0, last = 0;
  bool operator==(const ExpertRange &) const = default;
};

// How a GPU check of one GEMM fills, uploads and reads back its buffers.
struct GemmCheckPlan {
  OperandLayout layout;
  std::vector<int64_t> checkedRows; // sampleOutputRows, sorted
  // B (varlen-M weights) made by expert: only the experts with rows (the
  // only ones the kernel reads, and each has a checked row), in runs of
  // consecutive experts of at most maxWeightChunkBytes (or one expert); the
  // rest of B stays poisoned. When false, B is made whole.
  bool weightsByExpert = false;
  std::vector<ExpertRange> weightChunks;
  // C and aux_out read back only at the checked rows; when false, whole.
  bool outputsByRows = false;
  // Totals: input bytes made on the host and uploaded (routing metadata
  // included), output bytes read back, and a bound on the host memory the
  // operands, outputs and references take at once.
  int64_t uploadedBytes = 0, readBackBytes = 0, peakHostBytes = 0;
};

// Pure: the same plan for the same arguments.
GemmCheckPlan planGemmCheck(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                            const CheckBudget &budget, uint64_t seed);

struct ReferenceOutput {
  std::vector<double> c;      // outputRows.size() x cColumns
  std::vector<double> auxOut; // outputRows.size() x auxOutColumns (when used)
};

// Computes the given output rows in float64 from the operands' exact values,
// on all cores. Activations: swiglu(g, u) = silu(g) u, geglu(g, u) =
// gelu_tanh(g) u, gelu (tanh form), relu, none.
ReferenceOutput referenceGemm(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                              const HostOperands &operands, std::span<const int64_t> outputRows);

// ||actual - expected|| / ||expected|| (Frobenius) over the compared rows;
// when the reference is all zeros, ||actual|| instead. Non-finite actual
// values are counted, and make the error infinite.
struct Comparison {
  double relativeError = 0;
  int64_t nonFinite = 0;
};
// `actual` holds whole rows of `columns` values; the rows compared are
// `outputRows`, whose reference values are `expected` in that order.
Comparison compareRows(std::span<const double> expected, std::span<const float> actual,
                       int64_t columns, std::span<const int64_t> outputRows);
// The same for outputs in the dtype's 16-bit patterns.
Comparison compareRows(std::span<const double> expected, std::span<const uint16_t> actual,
                       DType dtype, int64_t columns, std::span<const int64_t> outputRows);

// The scalar activation math, exposed for tests.
// f is the activation, or the gate's function for gated ones (silu for
// swiglu, gelu_tanh for geglu).
double activationValue(Activation act, double x);      // f(x)
double activationDerivative(Activation act, double x); // f'(x)

} // namespace moejit

#include "runtime/src/reference.h"

#include "moejit/error.h"
#include "runtime/src/half.h"
#include "compiler/spec/parallel.h"
#include "runtime/src/random.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace moejit {

namespace {

// Layer sizes under the names of docs/kernel-abi.md.
struct Dims {
  int64_t E, d, n, u, T, R;
  explicit Dims(const LayerSpec &layer, const GroupedRows &rows)
      : E(layer.experts), d(layer.hidden), n(layer.intermediate), u(layer.upColumns()),
        T(rows.tokens), R(rows.rows()) {}
};

bool gated(const LayerSpec &layer) { return isGated(layer.activation); }

int64_t gateColumn(const LayerSpec &layer, int64_t j) {
  return layer.gateUp == GateUpLayout::Concatenated ? j : 2 * j;
}
int64_t upColumn(const LayerSpec &layer, int64_t j) {
  return layer.gateUp == GateUpLayout::Concatenated ? layer.intermediate + j : 2 * j + 1;
}

// All 65536 patterns of the dtype as floats: the reference decodes operands
// on the fly instead of holding float64 copies of weights that can be tens
// of GB.
class HalfDecoder {
public:
  explicit HalfDecoder(DType dtype) : table_(65536) {
    for (uint32_t bits = 0; bits < 65536; ++bits)
      table_[bits] = halfToFloat(dtype, static_cast<uint16_t>(bits));
  }
  double operator()(uint16_t bits) const { return table_[bits]; }
  void row(const uint16_t *bits, int64_t count, double *out) const {
    for (int64_t i = 0; i < count; ++i)
      out[i] = table_[bits[i]];
  }

private:
  std::vector<float> table_;
};

constexpr double kGeluTanhScale = 0.7978845608028654; // sqrt(2 / pi)
constexpr double kGeluCubic = 0.044715;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

} // namespace

double activationValue(Activation act, double x) {
  switch (act) {
  case Activation::SwiGLU:
    return x * sigmoid(x);
  case Activation::GeGLU:
  case Activation::GeLU:
    return 0.5 * x * (1.0 + std::tanh(kGeluTanhScale * (x + kGeluCubic * x * x * x)));
  case Activation::ReLU:
    return x > 0 ? x : 0.0;
  case Activation::None:
    return x;
  }
  return x;
}

double activationDerivative(Activation act, double x) {
  switch (act) {
  case Activation::SwiGLU: {
    const double s = sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
  }
  case Activation::GeGLU:
  case Activation::GeLU: {
    const double t = std::tanh(kGeluTanhScale * (x + kGeluCubic * x * x * x));
    return 0.5 * (1.0 + t) +
           0.5 * x * (1.0 - t * t) * kGeluTanhScale * (1.0 + 3.0 * kGeluCubic * x * x);
  }
  case Activation::ReLU:
    return x > 0 ? 1.0 : 0.0;
  case Activation::None:
    return 1.0;
  }
  return 1.0;
}

OperandLayout operandLayout(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows) {
  const Dims s(layer, rows);
  OperandLayout l;
  switch (kind) {
  case GemmKind::UpProj: // X [T][d] gathered, W1 [E][d][u] -> H [R][u], act(H) [R][n]
    l.aElements = s.T * s.d;
    l.bElements = s.E * s.d * s.u;
    l.cRows = s.R;
    l.cColumns = s.u;
    if (layer.activation != Activation::None) {
      l.auxOutRows = s.R;
      l.auxOutColumns = s.n;
    }
    l.reduction = s.d;
    break;
  case GemmKind::DownProj: // act [R][n], W2 [E][n][d] -> Y [R][d]
    l.aElements = s.R * s.n;
    l.bElements = s.E * s.n * s.d;
    l.cRows = s.R;
    l.cColumns = s.d;
    l.reduction = s.n;
    break;
  case GemmKind::DH: // dO [T][d] gathered, W2 [E][n][d] as W2^T, H [R][u] -> dH [R][u], dS [R]
    l.aElements = s.T * s.d;
    l.bElements = s.E * s.n * s.d;
    l.auxInElements = s.R * s.u;
    l.cRows = s.R;
    l.cColumns = s.u;
    l.auxOutRows = s.R;
    l.auxOutColumns = 1;
    l.auxOutIsFloat = true;
    l.reduction = s.d;
    break;
  case GemmKind::DW2: // act [R][n]^T, s * dO [T][d] gathered -> dW2 [E][n][d]
    l.varlenK = true;
    l.aElements = s.R * s.n;
    l.bElements = s.T * s.d;
    l.cRows = s.E * s.n;
    l.cColumns = s.d;
    break;
  case GemmKind::DW1: // X [T][d] gathered ^T, dH [R][u] -> dW1 [E][d][u]
    l.varlenK = true;
    l.aElements = s.T * s.d;
    l.bElements = s.R * s.u;
    l.cRows = s.E * s.d;
    l.cColumns = s.u;
    break;
  case GemmKind::DX: // dH [R][u], W1 [E][d][u] as W1^T -> dX~ [R][d]
    l.aElements = s.R * s.u;
    l.bElements = s.E * s.d * s.u;
    l.cRows = s.R;
    l.cColumns = s.d;
    l.reduction = s.u;
    break;
  }
  return l;
}

void fillRandomOperand(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                       uint64_t seed, OperandSlot slot, int64_t first, std::span<uint16_t> out) {
  const OperandLayout l = operandLayout(kind, layer, rows);
  double bound = 1.0;
  if (slot == OperandSlot::B && !l.varlenK)
    bound = 1.0 / std::sqrt(double(l.reduction)); // weights
  else if (slot == OperandSlot::AuxIn)
    bound = 1.5;
  const uint64_t stream = uint64_t(kind) * 16 + uint64_t(slot);
  uint16_t (*const convert)(float) = layer.dtype == DType::BF16 ? floatToBf16 : floatToFp16;
  parallelFor(static_cast<int64_t>(out.size()), [&](int64_t begin, int64_t end) {
    // Locals, which the conversion call cannot change, so that the stream's
    // part of counterRandom is hoisted out of the loop (tens of GB are made).
    const uint64_t localSeed = seed, localStream = stream, localFirst = first;
    const double localBound = bound;
    uint16_t *const values = out.data();
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t bits = counterRandom(localSeed, localStream, localFirst + uint64_t(i));
      values[i] = convert(static_cast<float>((2.0 * unitInterval(bits) - 1.0) * localBound));
    }
  });
}

HostOperands randomOperands(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                            uint64_t seed) {
  const OperandLayout l = operandLayout(kind, layer, rows);
  auto fill = [&](int64_t count, OperandSlot slot) {
    std::vector<uint16_t> values(count);
    fillRandomOperand(kind, layer, rows, seed, slot, 0, values);
    return values;
  };
  HostOperands operands;
  operands.a = fill(l.aElements, OperandSlot::A);
  operands.b = fill(l.bElements, OperandSlot::B);
  operands.auxIn = fill(l.auxInElements, OperandSlot::AuxIn);
  return operands;
}

int64_t referenceMacs(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                      int64_t outputRow) {
  const OperandLayout l = operandLayout(kind, layer, rows);
  if (!l.varlenK)
    return l.reduction * l.cColumns;
  const int64_t m = l.cRows / layer.experts;
  return int64_t(rows.counts[outputRow / m]) * l.cColumns;
}

std::vector<int64_t> sampleOutputRows(GemmKind kind, const LayerSpec &layer,
                                      const GroupedRows &rows, int64_t maxMacs, uint64_t seed,
                                      int64_t maxOutputElements) {
  const OperandLayout l = operandLayout(kind, layer, rows);
  // A row costs its multiply-accumulates plus its outputs (held in float64
  // and compared), so that huge all-zero gradients of empty experts are
  // sampled too.
  auto cost = [&](int64_t row) { return referenceMacs(kind, layer, rows, row) + l.cColumns; };
  const int64_t m = l.varlenK ? l.cRows / layer.experts : 0;
  const int64_t totalCost = l.varlenK ? (rows.rows() * m + l.cRows) * l.cColumns
                                      : l.cRows * (l.reduction + 1) * l.cColumns;
  const int64_t maxRows = maxOutputElements / std::max<int64_t>(l.cColumns, 1);
  std::vector<int64_t> chosen;
  if (totalCost <= maxMacs && l.cRows <= maxRows) {
    chosen.resize(l.cRows);
    for (int64_t r = 0; r < l.cRows; ++r)
      chosen[r] = r;
    return chosen;
  }
  RandomStream random(seed, 0x5a3e1ull + uint64_t(kind));
  std::vector<bool> taken(l.cRows, false);
  int64_t spent = 0;
  auto take = [&](int64_t row) {
    if (taken[row])
      return;
    taken[row] = true;
    chosen.push_back(row);
    spent += cost(row);
  };
  // A row of every expert first (varlen-M: of every expert with rows), then
  // random rows while the budget lasts.
  for (int e = 0; e < layer.experts; ++e) {
    if (l.varlenK)
      take(e * m + static_cast<int64_t>(random.below(m)));
    else if (rows.counts[e] > 0)
      take(rows.offsets[e] + static_cast<int64_t>(random.below(rows.counts[e])));
  }
  for (int64_t attempts = 0;
       spent < maxMacs && int64_t(chosen.size()) < maxRows && attempts < 4 * l.cRows; ++attempts)
    take(static_cast<int64_t>(random.below(l.cRows)));
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

GemmCheckPlan planGemmCheck(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                            const CheckBudget &budget, uint64_t seed) {
  GemmCheckPlan plan;
  plan.layout = operandLayout(kind, layer, rows);
  const OperandLayout &l = plan.layout;
  const int64_t half = 2, auxBytes = l.auxOutIsFloat ? 4 : half;
  plan.weightsByExpert = !l.varlenK && l.bElements * half > budget.maxWholeBufferBytes;
  plan.outputsByRows = l.cRows * l.cColumns * half > budget.maxWholeBufferBytes;
  plan.checkedRows = sampleOutputRows(kind, layer, rows, budget.maxReferenceMacs, seed,
                                      plan.outputsByRows ? budget.maxReadBackElements
                                                         : std::numeric_limits<int64_t>::max());

  const int64_t expertElements = l.bElements / layer.experts;
  int64_t bMade = l.bElements, bHeld = l.bElements;
  if (plan.weightsByExpert) {
    const int64_t expertsPerChunk = std::max<int64_t>(
        1, budget.maxWeightChunkBytes / std::max<int64_t>(expertElements * half, 1));
    bMade = bHeld = 0;
    for (int e = 0; e < layer.experts; ++e) {
      if (rows.counts[e] == 0)
        continue;
      if (plan.weightChunks.empty() || plan.weightChunks.back().last != e ||
          plan.weightChunks.back().last - plan.weightChunks.back().first >= expertsPerChunk)
        plan.weightChunks.push_back({e, e});
      ++plan.weightChunks.back().last;
      bMade += expertElements;
    }
    for (const ExpertRange &chunk : plan.weightChunks)
      bHeld = std::max(bHeld, (chunk.last - chunk.first) * expertElements);
  }

  const int64_t routingBytes =
      (int64_t(layer.experts) + 1) * 4 + rows.rows() * int64_t(sizeof(int32_t) + sizeof(float));
  plan.uploadedBytes = (l.aElements + bMade + l.auxInElements) * half + routingBytes;
  const int64_t readRows = plan.outputsByRows ? int64_t(plan.checkedRows.size()) : l.cRows;
  const int64_t readAuxRows = plan.outputsByRows ? (l.auxOutRows > 0 ? readRows : 0) : l.auxOutRows;
  plan.readBackBytes = readRows * l.cColumns * half + readAuxRows * l.auxOutColumns * auxBytes;
  const int64_t referenceBytes =
      int64_t(plan.checkedRows.size()) * (l.cColumns + l.auxOutColumns) * int64_t(sizeof(double));
  plan.peakHostBytes = (l.aElements + bHeld + l.auxInElements) * half + routingBytes +
                       plan.readBackBytes + referenceBytes;
  return plan;
}

namespace {

// acc[j] = sum_k a[k] * B[k][j], B one expert's matrix of the weight operand,
// stored [K][N] (kn) or [N][K].
void rowTimesMatrix(const double *a, int64_t K, const uint16_t *b, bool kn, int64_t N,
                    const HalfDecoder &decode, double *acc) {
  std::fill(acc, acc + N, 0.0);
  if (kn) {
    for (int64_t k = 0; k < K; ++k) {
      const double ak = a[k];
      const uint16_t *bRow = b + k * N;
      for (int64_t j = 0; j < N; ++j)
        acc[j] += ak * decode(bRow[j]);
    }
  } else {
    for (int64_t j = 0; j < N; ++j) {
      const uint16_t *bRow = b + j * K;
      double sum = 0;
      for (int64_t k = 0; k < K; ++k)
        sum += a[k] * decode(bRow[k]);
      acc[j] = sum;
    }
  }
}

// Elements [first, first + count) of B, which must be in the host window.
const uint16_t *bElements(const HostOperands &ops, int64_t first, int64_t count) {
  if (first < ops.bFirst || first + count > ops.bFirst + static_cast<int64_t>(ops.b.size()))
    throw Error("reference: elements [" + std::to_string(first) + ", " +
                std::to_string(first + count) + ") of operand B are not on the host (it holds [" +
                std::to_string(ops.bFirst) + ", " +
                std::to_string(ops.bFirst + static_cast<int64_t>(ops.b.size())) + "))");
  return ops.b.data() + (first - ops.bFirst);
}

// One grouped row of a varlen-M family: its C row and aux_out row.
void varlenMRow(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                const HostOperands &ops, const HalfDecoder &decode, int64_t r, double *c,
                double *auxOut, std::vector<double> &aRow, std::vector<double> &acc) {
  const Dims s(layer, rows);
  const int e = rows.expertOfRow(r);
  const int64_t token = rows.gather[r];
  const double score = rows.scale[r];
  switch (kind) {
  case GemmKind::UpProj: {
    decode.row(ops.a.data() + token * s.d, s.d, aRow.data());
    rowTimesMatrix(aRow.data(), s.d, bElements(ops, e * s.d * s.u, s.d * s.u), true, s.u, decode,
                   c);
    if (layer.activation == Activation::None)
      return;
    for (int64_t j = 0; j < s.n; ++j)
      auxOut[j] = gated(layer) ? activationValue(layer.activation, c[gateColumn(layer, j)]) *
                                     c[upColumn(layer, j)]
                               : activationValue(layer.activation, c[j]);
    return;
  }
  case GemmKind::DownProj:
    decode.row(ops.a.data() + r * s.n, s.n, aRow.data());
    rowTimesMatrix(aRow.data(), s.n, bElements(ops, e * s.n * s.d, s.n * s.d), true, s.d, decode,
                   c);
    for (int64_t j = 0; j < s.d; ++j)
      c[j] *= score;
    return;
  case GemmKind::DH: {
    decode.row(ops.a.data() + token * s.d, s.d, aRow.data());
    double *dA = acc.data();
    rowTimesMatrix(aRow.data(), s.d, bElements(ops, e * s.n * s.d, s.n * s.d), false, s.n, decode,
                   dA);
    const uint16_t *h = ops.auxIn.data() + r * s.u;
    double dS = 0;
    for (int64_t j = 0; j < s.n; ++j) {
      const double g = score * dA[j];
      if (gated(layer)) {
        const int64_t gc = gateColumn(layer, j), uc = upColumn(layer, j);
        const double gate = decode(h[gc]), up = decode(h[uc]);
        const double f = activationValue(layer.activation, gate);
        c[gc] = g * up * activationDerivative(layer.activation, gate);
        c[uc] = g * f;
        dS += dA[j] * f * up;
      } else {
        const double x = decode(h[j]);
        c[j] = g * activationDerivative(layer.activation, x);
        dS += dA[j] * activationValue(layer.activation, x);
      }
    }
    auxOut[0] = dS;
    return;
  }
  case GemmKind::DX:
    decode.row(ops.a.data() + r * s.u, s.u, aRow.data());
    rowTimesMatrix(aRow.data(), s.u, bElements(ops, e * s.d * s.u, s.d * s.u), false, s.d, decode,
                   c);
    return;
  case GemmKind::DW1:
  case GemmKind::DW2:
    break;
  }
  throw Error("varlenMRow called for a varlen-K family");
}

// One row (expert e, row i) of a weight gradient: sum over e's grouped rows.
void varlenKRow(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                const HostOperands &ops, const HalfDecoder &decode, int64_t outputRow, double *c,
                std::vector<double> &bRow) {
  const Dims s(layer, rows);
  const bool dw2 = kind == GemmKind::DW2;
  const int64_t m = dw2 ? s.n : s.d;
  const int64_t N = dw2 ? s.d : s.u;
  const int64_t e = outputRow / m, i = outputRow % m;
  std::fill(c, c + N, 0.0);
  for (int64_t r = rows.offsets[e]; r < rows.offsets[e + 1]; ++r) {
    const int64_t token = rows.gather[r];
    double a;
    const uint16_t *b;
    double bScale = 1.0;
    if (dw2) { // act[r][i] * (s_r dO[token])
      a = decode(ops.a[r * s.n + i]);
      b = bElements(ops, token * s.d, s.d);
      bScale = rows.scale[r];
    } else { // X[token][i] * dH[r]
      a = decode(ops.a[token * s.d + i]);
      b = bElements(ops, r * s.u, s.u);
    }
    decode.row(b, N, bRow.data());
    const double weight = a * bScale;
    for (int64_t j = 0; j < N; ++j)
      c[j] += weight * bRow[j];
  }
}

} // namespace

ReferenceOutput referenceGemm(GemmKind kind, const LayerSpec &layer, const GroupedRows &rows,
                              const HostOperands &operands, std::span<const int64_t> outputRows) {
  const OperandLayout l = operandLayout(kind, layer, rows);
  const HalfDecoder decode(layer.dtype);
  const int64_t count = static_cast<int64_t>(outputRows.size());
  ReferenceOutput out;
  out.c.resize(count * l.cColumns);
  if (l.auxOutRows > 0)
    out.auxOut.resize(count * l.auxOutColumns);
  const int64_t scratch =
      std::max({int64_t(layer.hidden), layer.upColumns(), int64_t(layer.intermediate)});
  parallelFor(count, [&](int64_t begin, int64_t end) {
    std::vector<double> aRow(scratch), acc(scratch);
    for (int64_t i = begin; i < end; ++i) {
      double *c = out.c.data() + i * l.cColumns;
      if (l.varlenK)
        varlenKRow(kind, layer, rows, operands, decode, outputRows[i], c, aRow);
      else
        varlenMRow(kind, layer, rows, operands, decode, outputRows[i], c,
                   out.auxOut.empty() ? nullptr : out.auxOut.data() + i * l.auxOutColumns, aRow,
                   acc);
    }
  });
  return out;
}

namespace {

template <class Value>
Comparison compareRowsWith(std::span<const double> expected, int64_t columns,
                           std::span<const int64_t> outputRows, Value &&actualValue) {
  Comparison result;
  double diff = 0, reference = 0, actualNorm = 0;
  for (size_t i = 0; i < outputRows.size(); ++i) {
    const int64_t rowStart = outputRows[i] * columns;
    const double *want = expected.data() + i * columns;
    for (int64_t j = 0; j < columns; ++j) {
      const double got = actualValue(rowStart + j);
      if (!std::isfinite(got)) {
        ++result.nonFinite;
        continue;
      }
      diff += (got - want[j]) * (got - want[j]);
      reference += want[j] * want[j];
      actualNorm += got * got;
    }
  }
  if (result.nonFinite > 0)
    result.relativeError = std::numeric_limits<double>::infinity();
  else if (reference > 0)
    result.relativeError = std::sqrt(diff / reference);
  else
    result.relativeError = std::sqrt(actualNorm);
  return result;
}

} // namespace

Comparison compareRows(std::span<const double> expected, std::span<const float> actual,
                       int64_t columns, std::span<const int64_t> outputRows) {
  return compareRowsWith(expected, columns, outputRows,
                         [&](int64_t i) { return double(actual[i]); });
}

Comparison compareRows(std::span<const double> expected, std::span<const uint16_t> actual,
                       DType dtype, int64_t columns, std::span<const int64_t> outputRows) {
  const HalfDecoder decode(dtype);
  return compareRowsWith(expected, columns, outputRows,
                         [&](int64_t i) { return decode(actual[i]); });
}

} // namespace moejit

#include "compiler/dialect/moe_dialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;

#include "compiler/dialect/moe_enums.cpp.inc"

#include "compiler/dialect/moe_dialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "compiler/dialect/moe_attrs.cpp.inc"

#define GET_OP_CLASSES
#include "compiler/dialect/moe_ops.cpp.inc"

namespace moejit::moe {

void MoeDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "compiler/dialect/moe_attrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "compiler/dialect/moe_ops.cpp.inc"
      >();
}

namespace {

constexpr int64_t kWarpSize = 32;
constexpr int64_t kMaxThreads = 512;
// Accumulator registers per thread above which the warp tile spills.
constexpr int64_t kMaxAccumulatorsPerThread = 128;

bool isGated(Activation act) {
  return act == Activation::SwiGLU || act == Activation::GeGLU;
}

} // namespace

LogicalResult GroupedGemmOp::verify() {
  Type element = getElementType();
  if (!element.isBF16() && !element.isF16())
    return emitOpError("element_type must be bf16 or f16, got ") << element;
  if (getExperts() <= 0)
    return emitOpError("experts must be positive, got ") << getExperts();

  const bool varlenM = getVarlen() == Varlen::M;
  const int64_t m = getM(), n = getN(), k = getK();
  if (varlenM && (m != 0 || n <= 0 || k <= 0))
    return emitOpError("varlen-M needs m = 0 (a run-time value) and positive "
                       "n and k, got m = ")
           << m << ", n = " << n << ", k = " << k;
  if (!varlenM && (k != 0 || m <= 0 || n <= 0))
    return emitOpError("varlen-K needs k = 0 (a run-time value) and positive "
                       "m and n, got m = ")
           << m << ", n = " << n << ", k = " << k;
  if (m % 8 || n % 8 || k % 8)
    return emitOpError("m, n and k must be multiples of 8 (16-byte rows), got ")
           << m << ", " << n << ", " << k;

  ArrayRef<int64_t> tile = getTile();
  if (tile.size() != 3)
    return emitOpError("tile must have 3 entries (m, n, k), got ")
           << tile.size();
  if (tile[0] <= 0 || tile[1] <= 0 || tile[2] <= 0 || tile[0] % 16 ||
      tile[1] % 16)
    return emitOpError("tile m and n must be positive multiples of 16, got ")
           << tile[0] << "x" << tile[1];
  if (tile[2] % 16)
    return emitOpError("tile k must be a multiple of 16 (the mma k step), got ")
           << tile[2];
  ArrayRef<int64_t> warps = getWarps();
  if (warps.size() != 2 || warps[0] <= 0 || warps[1] <= 0)
    return emitOpError("warps must be two positive counts (along m, n)");
  if (tile[0] % (warps[0] * 16) || tile[1] % (warps[1] * 16))
    return emitOpError("tile ")
           << tile[0] << "x" << tile[1] << " does not divide into the "
           << warps[0] << "x" << warps[1]
           << " warp layout with warp tiles that are multiples of 16";
  if (warps[0] * warps[1] * kWarpSize > kMaxThreads)
    return emitOpError("warp layout ")
           << warps[0] << "x" << warps[1] << " exceeds " << kMaxThreads
           << " threads";
  const int64_t accumulators =
      (tile[0] / warps[0]) * (tile[1] / warps[1]) / kWarpSize;
  if (accumulators > kMaxAccumulatorsPerThread)
    return emitOpError("warp tile ")
           << tile[0] / warps[0] << "x" << tile[1] / warps[1] << " needs "
           << accumulators << " accumulator registers per thread (at most "
           << kMaxAccumulatorsPerThread << "); use more warps or a smaller tile";
  if (getStages() < 2 || getStages() > 8)
    return emitOpError("stages must be in [2, 8], got ") << getStages();
  if (getPingPong() && (getPath() != KernelPath::Hopper ||
                        !(tile[0] == 64 || (tile[0] == 128 && tile[1] <= 128))))
    return emitOpError("ping_pong needs path = hopper and tile m = 64, or 128 with tile n "
                       "<= 128 (each consumer warpgroup owns a whole tile), got tile ")
           << tile[0] << "x" << tile[1];
  if (getStaggeredEpilogues() &&
      (getPath() != KernelPath::Hopper || getPingPong() || tile[0] != 128))
    return emitOpError("staggered_epilogues needs path = hopper without ping_pong and tile m = "
                       "128 (two cooperative consumer warpgroups take turns on the epilogue), "
                       "got tile ")
           << tile[0] << "x" << tile[1];
  if (getTmaStores()) {
    const Epilogue epilogue = getEpilogue();
    const bool halves =
        epilogue == Epilogue::ActForward &&
        (getActivation() == Activation::SwiGLU || getActivation() == Activation::GeGLU) &&
        getGateUp() == GateUpLayout::Concatenated && tile[1] % 128 == 0 &&
        (n / 2) % (tile[1] / 2) == 0;
    if (getPath() != KernelPath::Hopper || getPingPong() || getStaggeredEpilogues() ||
        !(epilogue == Epilogue::Store || epilogue == Epilogue::ScaleRows || halves))
      return emitOpError("tma_stores needs path = hopper with cooperative consumers and a "
                         "store, scale_rows or gated forward epilogue with concatenated halves "
                         "whose tile halves stay inside one half of H");
    // Output rows are whole 16-byte chunks: the tensor maps' strides and the
    // partial tiles' 16-byte copies need it.
    if (getCColumns() % 8 || getAuxColumns() % 8)
      return emitOpError("tma_stores needs c_columns and aux_columns that are multiples of 8 "
                         "(16-byte rows), got ")
             << getCColumns() << " and " << getAuxColumns();
  }
  if (getRasterAlongM() && (getPath() != KernelPath::Hopper || getPingPong()))
    return emitOpError("raster_along_m needs path = hopper without ping_pong (ping-pong "
                       "consumers take turns on the N-fastest work items)");
  if (const int64_t cluster = getClusterM(); cluster != 1) {
    if (cluster != 2 && cluster != 4)
      return emitOpError("cluster_m must be 1, 2 or 4, got ") << cluster;
    if (getPath() != KernelPath::Hopper)
      return emitOpError("cluster_m > 1 needs path = hopper (the cluster's "
                         "CTAs share B by TMA multicast)");
  }

  if (varlenM) {
    if (!getAKContiguous())
      return emitOpError("varlen-M reads A as grouped rows [M][K]: "
                         "a_k_contiguous must be true");
    if (getGatherB())
      return emitOpError("gather_b needs varlen-K: with varlen-M, B holds the "
                         "expert weights and only A's rows are grouped");
    if (getScaleBRows())
      return emitOpError("scale_b_rows needs varlen-K (B rows are the "
                         "grouped reduction)");
  } else {
    if (getAKContiguous() || getBKContiguous())
      return emitOpError("varlen-K reads A and B as grouped rows of the "
                         "reduction: a_k_contiguous and b_k_contiguous must be "
                         "false");
    if (getEpilogue() != Epilogue::Store)
      return emitOpError("epilogue ")
             << stringifyEpilogue(getEpilogue())
             << " is incompatible with varlen-K (weight gradients store the "
                "accumulator)";
  }

  const Activation act = getActivation();
  const bool gated = isGated(act);
  const int64_t cColumns = getCColumns(), auxColumns = getAuxColumns();
  switch (getEpilogue()) {
  case Epilogue::Store:
  case Epilogue::ScaleRows:
    if (cColumns != n)
      return emitOpError("c_columns must equal n (") << n << "), got "
                                                      << cColumns;
    break;
  case Epilogue::ActForward:
    if (act == Activation::None)
      return emitOpError("act_forward needs an activation other than none");
    if (cColumns != n)
      return emitOpError("act_forward writes H with n columns: c_columns "
                         "must be ")
             << n << ", got " << cColumns;
    if (gated && (n % 16 || auxColumns != n / 2))
      return emitOpError("a gated act_forward needs n a multiple of 16 and "
                         "aux_columns = n / 2 (")
             << n / 2 << "), got n = " << n << ", aux_columns = "
             << auxColumns;
    if (!gated && auxColumns != n)
      return emitOpError("act_forward of ")
             << stringifyActivation(act) << " needs aux_columns = n (" << n
             << "), got " << auxColumns;
    break;
  case Epilogue::DActivation: {
    const int64_t upColumns = gated ? 2 * n : n;
    if (cColumns != upColumns || auxColumns != upColumns)
      return emitOpError("d_activation of ")
             << stringifyActivation(act) << " writes dH and reads H with "
             << upColumns << " columns: c_columns and aux_columns must be "
             << upColumns << ", got " << cColumns << " and " << auxColumns;
    break;
  }
  }
  return success();
}

} // namespace moejit::moe

// What the code paths of moe.grouped_gemm share: the gpu.module and the
// kernel signature of docs/kernel-abi.md, the op's attributes, a builder of
// index and f32 arithmetic, the gate/up column mapping and the epilogue from
// m16n8 accumulator fragments to global memory.
#pragma once

#include "compiler/dialect/moe_dialect.h"
#include "moejit/problem.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMAttrs.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <utility>

namespace moejit::lowering {

inline constexpr llvm::StringLiteral kKernelModuleName = "moejit_kernels";

// Global buffers are 1-D memrefs of a static extent no real buffer reaches:
// the bare-pointer calling convention needs a static shape, and indices are
// computed in 64 bits by the kernel itself.
inline constexpr int64_t kUnboundedExtent = int64_t{1} << 58;

inline constexpr int64_t kWarpSize = 32;

// A CUtensorMap: the tensor-map kernel parameters are one each, passed by
// value.
inline constexpr int64_t kTensorMapBytes = 128;
inline constexpr KernelArg kTensorMapArgs[] = {KernelArg::WeightMap, KernelArg::ActivationMap,
                                               KernelArg::OutputMap, KernelArg::AuxMap};

bool isGated(moe::Activation activation);

// The op's attributes as plain values.
struct GroupedGemmAttrs {
  explicit GroupedGemmAttrs(moe::GroupedGemmOp op);

  int64_t elementBytes() const;
  // SwiGLU/GeGLU forward with concatenated halves: an activation column
  // needs a gate and an up column of B that lie n/2 apart.
  bool splitsGateUp() const;
  // The portable path: the CTA's B tile takes 8-column chunks alternately
  // from the gate and the up half, so that each thread holds gate j and up j
  // in neighbouring n8 fragments (a warp owns only part of the tile's N).
  bool pairsGateUpChunks() const { return splitsGateUp() && !gateUpHalves; }
  // The Hopper path (gateUpHalves set): the first half of the B tile is
  // tile.n / 2 gate columns, the second the same up columns; a warpgroup
  // owns every column, so gate j and up j sit n8Blocks / 2 fragments apart.
  bool halvesGateUp() const { return splitsGateUp() && gateUpHalves; }
  bool gateUpHalves = false;

  bool varlenM;
  mlir::Type element;
  int64_t experts, m, n, k;
  bool bKContiguous, gatherA, gatherB, scaleBRows;
  moe::Epilogue epilogue;
  moe::Activation activation;
  moe::GateUpLayout gateUp;
  int64_t cColumns, auxColumns;
  int64_t tileM, tileN, tileK, stages;
};

// The kernel parameters, in the order of KernelArg.
struct KernelParams {
  mlir::Value a, b, c, auxIn, auxOut, offsets, gather, scale, totalRows;
  mlir::Value weightMap;     // !llvm.ptr to the by-value CUtensorMap of B
  mlir::Value activationMap; // the same for A
  mlir::Value outputMap;     // the same for C (TMA stores)
  mlir::Value auxMap;        // the same for aux_out (TMA stores)
};

using KernelBodyEmitter =
    llvm::function_ref<void(mlir::ImplicitLocOpBuilder &, const KernelParams &)>;

// Creates the kernel of `op` with `threads` threads per block in `kernels`:
// `emitBody` builds its body from the start of the entry block. A
// `clusterSize` over 1 makes the kernel require clusters of that many CTAs
// along x.
void buildKernel(moe::GroupedGemmOp op, mlir::gpu::GPUModuleOp kernels, int64_t threads,
                 KernelBodyEmitter emitBody, int64_t clusterSize = 1);

// Replaces each moe.grouped_gemm of `module` that `selects` picks by the
// kernel `lower` emits into the module's gpu.module (created on demand).
mlir::LogicalResult lowerGroupedGemmOps(
    mlir::ModuleOp module, llvm::function_ref<bool(moe::GroupedGemmOp)> selects,
    llvm::function_ref<mlir::LogicalResult(moe::GroupedGemmOp, mlir::gpu::GPUModuleOp)> lower);

// Index, integer and f32 arithmetic, loads and guarded regions.
class KernelBuilder {
public:
  // `builder` inserts into the kernel's body (any block of it).
  explicit KernelBuilder(mlir::ImplicitLocOpBuilder &builder);

  // Constants are created once per kernel, at the start of its entry block:
  // the unrolled tiles ask for the same few thousands of times, and every op
  // costs time in each conversion pass.
  mlir::Value constant(mlir::TypedAttr value);
  mlir::Value idx(int64_t v) { return constant(b.getIndexAttr(v)); }
  mlir::Value i64(int64_t v) { return constant(b.getI64IntegerAttr(v)); }
  mlir::Value f32(double v) { return constant(b.getF32FloatAttr(v)); }
  mlir::Value add(mlir::Value x, mlir::Value y) { return mlir::arith::AddIOp::create(b, x, y); }
  mlir::Value sub(mlir::Value x, mlir::Value y) { return mlir::arith::SubIOp::create(b, x, y); }
  mlir::Value mul(mlir::Value x, mlir::Value y) { return mlir::arith::MulIOp::create(b, x, y); }
  mlir::Value divu(mlir::Value x, mlir::Value y) { return mlir::arith::DivUIOp::create(b, x, y); }
  mlir::Value remu(mlir::Value x, mlir::Value y) { return mlir::arith::RemUIOp::create(b, x, y); }
  mlir::Value xori(mlir::Value x, mlir::Value y) { return mlir::arith::XOrIOp::create(b, x, y); }
  mlir::Value ceilDiv(mlir::Value x, int64_t y) { return divu(add(x, idx(y - 1)), idx(y)); }
  mlir::Value lt(mlir::Value x, mlir::Value y) {
    return mlir::arith::CmpIOp::create(b, mlir::arith::CmpIPredicate::slt, x, y);
  }
  mlir::Value land(mlir::Value x, mlir::Value y) { return mlir::arith::AndIOp::create(b, x, y); }
  mlir::Value select(mlir::Value cond, mlir::Value x, mlir::Value y) {
    return mlir::arith::SelectOp::create(b, cond, x, y);
  }
  mlir::Value fadd(mlir::Value x, mlir::Value y) { return mlir::arith::AddFOp::create(b, x, y); }
  mlir::Value fsub(mlir::Value x, mlir::Value y) { return mlir::arith::SubFOp::create(b, x, y); }
  mlir::Value fmul(mlir::Value x, mlir::Value y) { return mlir::arith::MulFOp::create(b, x, y); }
  mlir::Value fdiv(mlir::Value x, mlir::Value y) { return mlir::arith::DivFOp::create(b, x, y); }
  mlir::Value toIndex(mlir::Value integer) {
    return mlir::arith::IndexCastOp::create(b, b.getIndexType(), integer);
  }
  mlir::Value toI64(mlir::Value index) {
    return mlir::arith::IndexCastUIOp::create(b, b.getI64Type(), index);
  }
  mlir::Value load(mlir::Value memref, mlir::Value index) {
    return mlir::memref::LoadOp::create(b, memref, mlir::ValueRange{index});
  }
  mlir::Value loadIndex(mlir::Value memref, mlir::Value index) {
    return toIndex(load(memref, index));
  }

  // `cond ? thenValue() : elseValue`, running thenValue's ops only under cond
  // (for loads whose address is only valid when cond holds).
  mlir::Value guarded(mlir::Value cond, mlir::Type type,
                      llvm::function_ref<mlir::Value()> thenValue, mlir::Value elseValue);
  void when(mlir::Value cond, llvm::function_ref<void()> body);
  // `body` under `cond`, or unconditionally where cond is null.
  void whenSet(mlir::Value cond, llvm::function_ref<void()> body);

  // The kernel's dynamic shared memory as bytes, and a memref type of the
  // workgroup address space.
  mlir::Value dynamicSharedBytes();
  mlir::MemRefType workgroupMemRef(llvm::ArrayRef<int64_t> shape, mlir::Type element);

protected:
  mlir::ImplicitLocOpBuilder &b;

private:
  mlir::Block *constantBlock;
  llvm::DenseMap<mlir::Attribute, mlir::Value> constants;
};

// What both kernel emitters emit alike: row gathers, the gate/up column
// mapping, the split of a thread's copies, and the epilogue of a row of
// m16n8 accumulator fragments. `lane` is set by the emitter.
class GroupedGemmEmitter : public KernelBuilder {
public:
  GroupedGemmEmitter(mlir::ImplicitLocOpBuilder &builder, const GroupedGemmAttrs &attrs,
                     const KernelParams &params)
      : KernelBuilder(builder), attrs(attrs), args(params) {}

protected:
  // Grouped row -> row of the stored matrix (the token for gathered rows).
  mlir::Value storedRow(mlir::Value row, mlir::Value valid, bool gathered);

  // Tile-local column of B/C -> (global column of the stored matrix, valid).
  std::pair<mlir::Value, mlir::Value> mapBColumn(mlir::Value nTile, mlir::Value column);
  // With paired gate/up chunks: the activation column j of tile column c.
  mlir::Value gateColumn(mlir::Value nTile, mlir::Value column);

  // Items t, t + threads, ... of `total` for thread t: calls
  // `each(item, inRange)`, inRange null where every thread's item exists,
  // else out-of-range threads get the last item, to be masked by inRange.
  void forEachThreadItem(mlir::Value threadId, int64_t threads, int64_t total,
                         llvm::function_ref<void(mlir::Value item, mlir::Value inRange)> each);

  // This lane's row (0..7) and first of two columns (0, 2, 4, 6) in an m16n8
  // accumulator fragment; the second row half sits 8 rows below.
  mlir::Value fragmentRow();
  mlir::Value fragmentColumn();

  // The epilogue of one row of this thread's accumulators: output row
  // `outRow` (valid: `rowValid`), n8 fragments 0..n8Blocks-1 at tile-local
  // columns tileColumn(j) (even, the first of two) holding fragment(j, 0)
  // and fragment(j, 1). The activation epilogues come out as one loop over
  // the fragments that LLVM unrolls (see emitBlockLoop).
  void emitEpilogueRow(mlir::Value nTile, mlir::Value outRow, mlir::Value rowValid,
                       int64_t n8Blocks, llvm::function_ref<mlir::Value(int64_t j)> tileColumn,
                       llvm::function_ref<mlir::Value(int64_t j, int64_t e)> fragment);

  const GroupedGemmAttrs &attrs;
  KernelParams args;
  mlir::Value lane;
  // Plain and scaled stores of neighbouring n8 blocks j, j+1 go out as one
  // 8-byte store per lane (a quad writes a whole 32-byte sector) after a
  // shuffle within the quad, instead of two 4-byte stores that each fill
  // half a sector. Set by the Hopper path; needs the blocks of a row in
  // order and contiguous in C (see wideStoresApply).
  bool wideStores = false;

  // Two elements as the 32-bit word they are stored as.
  mlir::Value packPair(mlir::Value first, mlir::Value second);
  // act(gate) * up for gated activations, else act(gate) (up unused).
  mlir::Value activation(mlir::Value gate, mlir::Value up);
  // scale[outRow] where rowValid, else 0.
  mlir::Value loadRowScale(mlir::Value outRow, mlir::Value rowValid);

private:
  mlir::Value toElement(mlir::Value f32Value);
  mlir::Value toF32(mlir::Value value);
  void storePair(mlir::Value memref, mlir::Value offset, mlir::Value first, mlir::Value second);
  bool wideStoresApply(int64_t n8Blocks) const;
  std::pair<mlir::Value, mlir::Value> quadSpanWords(mlir::Value wordJ, mlir::Value wordNext);
  mlir::Value quadSpanColumn();
  void storeSpanWords(mlir::Value memref, mlir::Value offset,
                      std::pair<mlir::Value, mlir::Value> words, mlir::Value valid);
  void storeBlockPair(mlir::Value nTile, mlir::Value rowBase, mlir::Value spanColumn,
                      mlir::Value rowValid, mlir::Value wordJ, mlir::Value wordNext);
  std::pair<mlir::Value, mlir::Value> loadPair(mlir::Value memref, mlir::Value offset);
  mlir::Value tanh(mlir::Value x);
  mlir::Value sigmoid(mlir::Value x);
  std::pair<mlir::Value, mlir::Value> geluAndDerivative(mlir::Value x);
  std::pair<mlir::Value, mlir::Value> activationAndDerivative(mlir::Value x);
  bool everyColumnExists() const;
  mlir::LLVM::LoopAnnotationAttr fullUnroll();
  // `body` once, in a loop over the blocks (blocks[j]: the values of block
  // j, of the same types for every j) that LLVM unrolls fully. Each block
  // runs under blockValid[j], or, where blockValid is empty, the whole loop
  // under rowValid. With `sums`, body returns an f32 and the loop returns
  // the sum over the blocks (invalid blocks add 0).
  mlir::Value emitBlockLoop(llvm::ArrayRef<llvm::SmallVector<mlir::Value>> blocks,
                            mlir::Value rowValid, llvm::ArrayRef<mlir::Value> blockValid, bool sums,
                            llvm::function_ref<mlir::Value(llvm::ArrayRef<mlir::Value>)> body);
  void emitActivationRow(mlir::Value nTile, mlir::Value outRow, mlir::Value rowValid,
                         int64_t n8Blocks, llvm::function_ref<mlir::Value(int64_t j)> tileColumn,
                         llvm::function_ref<mlir::Value(int64_t j, int64_t e)> fragment);
  void emitDActivationRow(mlir::Value nTile, mlir::Value outRow, mlir::Value rowValid,
                          int64_t n8Blocks, llvm::function_ref<mlir::Value(int64_t j)> tileColumn,
                          llvm::function_ref<mlir::Value(int64_t j, int64_t e)> fragment);
  void emitRowSumAtomic(mlir::Value partial, mlir::Value rowValid, mlir::Value outRow);
};

} // namespace moejit::lowering

// moe-lower-grouped-gemm: each moe.grouped_gemm becomes a gpu.func kernel.
//
// Portable path (sm_80+): a CTA computes one BM x BN tile of C for one expert.
// A and B tiles stream through a `stages`-deep ring of shared-memory buffers
// filled by 16-byte cp.async copies (zero-filled outside the matrix), warps
// read mma fragments with ldmatrix and accumulate in fp32 registers with
// mma.sync m16n8k16; the epilogue goes from registers straight to global
// memory, every store predicated on the bounds.
#include "compiler/dialect/moe_dialect.h"
#include "compiler/lowering/passes.h"
#include "moejit/problem.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <functional>

namespace moejit {

#define GEN_PASS_DEF_MOELOWERGROUPEDGEMM
#include "compiler/lowering/passes.h.inc"

using namespace mlir;

namespace {

// Global buffers are 1-D memrefs of a static extent no real buffer reaches:
// the bare-pointer calling convention needs a static shape, and indices are
// computed in 64 bits by the kernel itself.
constexpr int64_t kUnboundedExtent = int64_t{1} << 58;
constexpr int64_t kWarpSize = 32;
constexpr int64_t kChunkElements = 8; // one 16-byte cp.async of bf16/fp16
constexpr int64_t kMmaM = 16, kMmaN = 8, kMmaK = 16;
constexpr llvm::StringLiteral kKernelModuleName = "moejit_kernels";

bool isGated(moe::Activation act) {
  return act == moe::Activation::SwiGLU || act == moe::Activation::GeGLU;
}

// The op's attributes as plain values, plus the shapes derived from them.
struct GemmConfig {
  explicit GemmConfig(moe::GroupedGemmOp op)
      : varlenM(op.getVarlen() == moe::Varlen::M),
        element(op.getElementType()), experts(op.getExperts()), m(op.getM()),
        n(op.getN()), k(op.getK()), bKContiguous(op.getBKContiguous()),
        gatherA(op.getGatherA()), gatherB(op.getGatherB()),
        scaleBRows(op.getScaleBRows()), epilogue(op.getEpilogue()),
        activation(op.getActivation()), gateUp(op.getGateUp()),
        cColumns(op.getCColumns()), auxColumns(op.getAuxColumns()),
        tileM(op.getTile()[0]), tileN(op.getTile()[1]), tileK(op.getTile()[2]),
        stages(op.getStages()), warpsM(op.getWarps()[0]),
        warpsN(op.getWarps()[1]) {
    layout = portableTileLayout(
        TileShape{static_cast<int>(tileM), static_cast<int>(tileN),
                  static_cast<int>(tileK)},
        varlenM ? Varlen::M : Varlen::K, bKContiguous);
  }

  int64_t threads() const { return kWarpSize * warpsM * warpsN; }
  int64_t warpTileM() const { return tileM / warpsM; }
  int64_t warpTileN() const { return tileN / warpsN; }
  int64_t mmaTilesM() const { return warpTileM() / kMmaM; }
  int64_t mmaTilesN() const { return warpTileN() / kMmaN; }
  // SwiGLU/GeGLU forward with concatenated halves: the CTA's B tile takes
  // 8-column chunks alternately from the gate and the up half, so that each
  // thread holds gate j and up j in neighbouring n8 fragments.
  bool pairsGateUpChunks() const {
    return epilogue == moe::Epilogue::ActForward && isGated(activation) &&
           gateUp == moe::GateUpLayout::Concatenated;
  }
  Type auxOutElement(MLIRContext *ctx) const {
    return epilogue == moe::Epilogue::DActivation ? Float32Type::get(ctx)
                                                  : element;
  }

  bool varlenM;
  Type element;
  int64_t experts, m, n, k;
  bool bKContiguous, gatherA, gatherB, scaleBRows;
  moe::Epilogue epilogue;
  moe::Activation activation;
  moe::GateUpLayout gateUp;
  int64_t cColumns, auxColumns;
  int64_t tileM, tileN, tileK, stages, warpsM, warpsN;
  PortableTileLayout layout;
};

// The kernel parameters of docs/kernel-abi.md.
struct KernelArgs {
  Value a, b, c, auxIn, auxOut, offsets, gather, scale, totalRows;
};

// Where the CTA works: its expert and the range of grouped rows it covers
// (varlen-M: its M tile; varlen-K: the expert's whole reduction).
struct CtaTile {
  Value expert;
  Value rowBegin, rowEnd;
  Value mTile; // varlen-K only: index of the M tile
  Value nTile;
  Value kTiles; // number of K tiles of the main loop
};

// One operand's per-stage shared-memory tile and how a 16-byte chunk of it
// maps to global memory. `fixedPart` covers the coordinate that stays put
// over the K loop, `movingPart` the one that advances with the K tile; each
// gives an element offset into the global buffer and a validity bit, and the
// chunk's address is their sum.
struct OperandTile {
  Value global;
  Value shared; // memref<stages x outer x inner x T, 3>
  int64_t outer = 0, inner = 0; // inner without padding
  bool kIsOuter = false;
  std::function<std::pair<Value, Value>(Value)> fixedPart;
  std::function<std::pair<Value, Value>(Value kTile, Value)> movingPart;
};

struct Chunk {
  Value outer, inner;          // position inside the stage tile
  Value fixedOffset, fixedValid;
  Value inRange;               // null when every thread's chunk exists
};

class PortableKernelEmitter {
public:
  PortableKernelEmitter(ImplicitLocOpBuilder &builder, const GemmConfig &config,
                        const KernelArgs &args)
      : b(builder), cfg(config), args(args) {}

  void emit() {
    Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    lane = remu(tid, idx(kWarpSize));
    Value warp = divu(tid, idx(kWarpSize));
    warpM = remu(warp, idx(cfg.warpsM));
    warpN = divu(warp, idx(cfg.warpsM));
    threadId = tid;
    createSharedTiles();
    if (cfg.varlenM)
      emitVarlenM();
    else
      emitVarlenK();
  }

private:
  // --- small arithmetic helpers -------------------------------------------
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value f32(double v) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(v));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value divu(Value x, Value y) { return arith::DivUIOp::create(b, x, y); }
  Value remu(Value x, Value y) { return arith::RemUIOp::create(b, x, y); }
  Value ceilDiv(Value x, int64_t y) {
    return divu(add(x, idx(y - 1)), idx(y));
  }
  Value lt(Value x, Value y) {
    return arith::CmpIOp::create(b, arith::CmpIPredicate::slt, x, y);
  }
  Value land(Value x, Value y) { return arith::AndIOp::create(b, x, y); }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, c, x, y);
  }
  Value fadd(Value x, Value y) { return arith::AddFOp::create(b, x, y); }
  Value fsub(Value x, Value y) { return arith::SubFOp::create(b, x, y); }
  Value fmul(Value x, Value y) { return arith::MulFOp::create(b, x, y); }
  Value fdiv(Value x, Value y) { return arith::DivFOp::create(b, x, y); }
  Value toIndex(Value i32) {
    return arith::IndexCastOp::create(b, b.getIndexType(), i32);
  }
  Value load(Value memref, Value index) {
    return memref::LoadOp::create(b, memref, ValueRange{index});
  }
  Value loadIndex(Value memref, Value index) {
    return toIndex(load(memref, index));
  }

  // `cond ? thenValue() : elseValue`, running thenValue's ops only under cond
  // (for loads whose address is only valid when cond holds).
  Value guarded(Value cond, Type type, function_ref<Value()> thenValue,
                Value elseValue) {
    auto ifOp = scf::IfOp::create(b, TypeRange{type}, cond,
                                  /*withElseRegion=*/true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    scf::YieldOp::create(b, thenValue());
    b.setInsertionPointToStart(&ifOp.getElseRegion().front());
    scf::YieldOp::create(b, elseValue);
    return ifOp.getResult(0);
  }
  void when(Value cond, function_ref<void()> body) {
    auto ifOp = scf::IfOp::create(b, cond, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
    body();
  }

  // Grouped row -> row of the stored matrix (the token for gathered rows).
  Value storedRow(Value row, Value valid, bool gathered) {
    if (!gathered)
      return row;
    return guarded(valid, b.getIndexType(),
                   [&] { return loadIndex(args.gather, row); }, idx(0));
  }

  // --- shared memory ------------------------------------------------------
  void createSharedTiles() {
    MLIRContext *ctx = b.getContext();
    auto workgroup =
        gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
    auto bytes = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                 MemRefLayoutAttrInterface{}, workgroup);
    Value base = gpu::DynamicSharedMemoryOp::create(b, bytes);
    const PortableTileLayout &l = cfg.layout;
    auto aType = MemRefType::get({cfg.stages, l.aOuter, l.aInner}, cfg.element,
                                 MemRefLayoutAttrInterface{}, workgroup);
    auto bType = MemRefType::get({cfg.stages, l.bOuter, l.bInner}, cfg.element,
                                 MemRefLayoutAttrInterface{}, workgroup);
    const int64_t elementBytes = cfg.element.getIntOrFloatBitWidth() / 8;
    sharedA = memref::ViewOp::create(b, aType, base, idx(0), ValueRange{});
    sharedB = memref::ViewOp::create(
        b, bType, base, idx(cfg.stages * l.aOuter * l.aInner * elementBytes),
        ValueRange{});
  }

  // --- CTA -> work ----------------------------------------------------------
  // Varlen-M: block x enumerates (slot, N tile) with the N tile fastest, so
  // the CTAs in flight at once share their (gathered) A rows through L2 and
  // A streams from DRAM about once; an expert's B stays in L2 over its M
  // tiles. A slot is an entry in the list of all experts' M tiles; slots past
  // the last tile exit.
  void emitVarlenM() {
    const int64_t nTiles = (cfg.n + cfg.tileN - 1) / cfg.tileN;
    Value block = gpu::BlockIdOp::create(b, gpu::Dimension::x);
    Value slot = divu(block, idx(nTiles));
    auto [expert, firstSlot] = findExpertOfSlot(slot);
    when(lt(expert, idx(cfg.experts)), [&] {
      CtaTile tile;
      tile.expert = expert;
      tile.rowBegin = add(loadIndex(args.offsets, expert),
                          mul(sub(slot, firstSlot), idx(cfg.tileM)));
      tile.rowEnd = loadIndex(args.offsets, add(expert, idx(1)));
      tile.nTile = remu(block, idx(nTiles));
      tile.kTiles = idx((cfg.k + cfg.tileK - 1) / cfg.tileK);
      emitTile(tile);
    });
  }

  // The expert whose M tiles hold `slot` (E past the last tile) and the slot
  // of that expert's first tile. Every warp computes it on its own, 32
  // experts at a time: lane l takes expert 32c + l, a warp scan turns tile
  // counts into each expert's end slot, and warp reductions count the
  // experts (and their tiles) that end at or before `slot`. A serial walk
  // over the offsets cost microseconds per CTA at 128 experts.
  std::pair<Value, Value> findExpertOfSlot(Value slot) {
    Type i32 = b.getI32Type();
    auto c32 = [&](int32_t v) {
      return arith::ConstantOp::create(b, b.getI32IntegerAttr(v)).getResult();
    };
    auto warpSum = [&](Value v) -> Value {
      return NVVM::ReduxOp::create(
          b, i32, v, NVVM::ReduxKindAttr::get(b.getContext(), NVVM::ReduxKind::ADD),
          c32(-1));
    };
    Value slot32 = arith::IndexCastOp::create(b, i32, slot);
    Value expertsBefore = c32(0), slotsBefore = c32(0), chunkStart = c32(0);
    for (int64_t first = 0; first < cfg.experts; first += kWarpSize) {
      // Lanes past the last expert read offsets[E] twice: zero tiles.
      Value expert = arith::MinUIOp::create(b, add(idx(first), lane),
                                            idx(cfg.experts));
      Value next = arith::MinUIOp::create(b, add(expert, idx(1)),
                                          idx(cfg.experts));
      Value rows = arith::SubIOp::create(b, load(args.offsets, next),
                                         load(args.offsets, expert));
      Value tiles = arith::DivUIOp::create(
          b, arith::AddIOp::create(b, rows, c32(cfg.tileM - 1)),
          c32(cfg.tileM));
      Value inclusive = tiles;
      for (int32_t offset = 1; offset < kWarpSize; offset *= 2) {
        auto shuffle = gpu::ShuffleOp::create(b, inclusive, offset, kWarpSize,
                                              gpu::ShuffleMode::UP);
        inclusive = arith::AddIOp::create(
            b, inclusive,
            select(shuffle.getValid(), shuffle.getShuffleResult(), c32(0)));
      }
      Value endSlot = arith::AddIOp::create(b, chunkStart, inclusive);
      Value before = arith::CmpIOp::create(b, arith::CmpIPredicate::ule,
                                           endSlot, slot32);
      expertsBefore = arith::AddIOp::create(
          b, expertsBefore, warpSum(select(before, c32(1), c32(0))));
      slotsBefore = arith::AddIOp::create(
          b, slotsBefore, warpSum(select(before, tiles, c32(0))));
      chunkStart = arith::AddIOp::create(b, chunkStart, warpSum(tiles));
    }
    return {toIndex(expertsBefore), toIndex(slotsBefore)};
  }

  // Varlen-K: grid (M tiles, N tiles, experts); the K loop runs over the
  // expert's rows, zero times for an expert without rows (C gets zeros).
  void emitVarlenK() {
    CtaTile tile;
    tile.mTile = gpu::BlockIdOp::create(b, gpu::Dimension::x);
    tile.nTile = gpu::BlockIdOp::create(b, gpu::Dimension::y);
    tile.expert = gpu::BlockIdOp::create(b, gpu::Dimension::z);
    tile.rowBegin = loadIndex(args.offsets, tile.expert);
    tile.rowEnd = loadIndex(args.offsets, add(tile.expert, idx(1)));
    tile.kTiles = ceilDiv(sub(tile.rowEnd, tile.rowBegin), cfg.tileK);
    emitTile(tile);
  }

  // Tile-local column of B/C -> (global column of the stored matrix, valid).
  std::pair<Value, Value> mapBColumn(const CtaTile &tile, Value column) {
    if (!cfg.pairsGateUpChunks()) {
      Value global = add(mul(tile.nTile, idx(cfg.tileN)), column);
      return {global, lt(global, idx(cfg.n))};
    }
    Value half = gateColumn(tile, column);
    Value isUp = arith::CmpIOp::create(
        b, arith::CmpIPredicate::ne, remu(divu(column, idx(8)), idx(2)),
        idx(0));
    Value global = select(isUp, add(half, idx(cfg.n / 2)), half);
    return {global, lt(half, idx(cfg.n / 2))};
  }
  // With paired gate/up chunks: the activation column j of tile column c.
  Value gateColumn(const CtaTile &tile, Value column) {
    Value pairBase = mul(divu(column, idx(16)), idx(8));
    return add(add(mul(tile.nTile, idx(cfg.tileN / 2)), pairBase),
               remu(column, idx(8)));
  }

  // --- operand tiles ------------------------------------------------------
  OperandTile operandA(const CtaTile &tile) {
    OperandTile op;
    op.global = args.a;
    op.shared = sharedA;
    if (cfg.varlenM) { // [rows][K], rows fixed over the K loop
      op.outer = cfg.tileM;
      op.inner = cfg.tileK;
      op.kIsOuter = false;
      op.fixedPart = [this, tile](Value row) {
        Value grouped = add(tile.rowBegin, row);
        Value valid = lt(grouped, tile.rowEnd);
        Value stored = storedRow(grouped, valid, cfg.gatherA);
        return std::make_pair(mul(stored, idx(cfg.k)), valid);
      };
      op.movingPart = [this](Value kTile, Value column) {
        Value kIndex = add(mul(kTile, idx(cfg.tileK)), column);
        return std::make_pair(kIndex, lt(kIndex, idx(cfg.k)));
      };
    } else { // [rows = K][M]
      op.outer = cfg.tileK;
      op.inner = cfg.tileM;
      op.kIsOuter = true;
      op.fixedPart = [this, tile](Value column) {
        Value mIndex = add(mul(tile.mTile, idx(cfg.tileM)), column);
        return std::make_pair(mIndex, lt(mIndex, idx(cfg.m)));
      };
      op.movingPart = [this, tile](Value kTile, Value row) {
        Value grouped =
            add(add(tile.rowBegin, mul(kTile, idx(cfg.tileK))), row);
        Value valid = lt(grouped, tile.rowEnd);
        Value stored = storedRow(grouped, valid, cfg.gatherA);
        return std::make_pair(mul(stored, idx(cfg.m)), valid);
      };
    }
    return op;
  }

  OperandTile operandB(const CtaTile &tile) {
    OperandTile op;
    op.global = args.b;
    op.shared = sharedB;
    if (!cfg.varlenM) { // grouped rows [K][N]
      op.outer = cfg.tileK;
      op.inner = cfg.tileN;
      op.kIsOuter = true;
      op.fixedPart = [this, tile](Value column) {
        return mapBColumn(tile, column);
      };
      op.movingPart = [this, tile](Value kTile, Value row) {
        Value grouped =
            add(add(tile.rowBegin, mul(kTile, idx(cfg.tileK))), row);
        Value valid = lt(grouped, tile.rowEnd);
        Value stored = storedRow(grouped, valid, cfg.gatherB);
        return std::make_pair(mul(stored, idx(cfg.n)), valid);
      };
      return op;
    }
    // Expert weights: E matrices back to back; 64-bit offsets.
    Value expertBase = mul(tile.expert, idx(cfg.k * cfg.n));
    if (cfg.bKContiguous) { // [N][K]
      op.outer = cfg.tileN;
      op.inner = cfg.tileK;
      op.kIsOuter = false;
      op.fixedPart = [this, tile, expertBase](Value row) {
        auto [column, valid] = mapBColumn(tile, row);
        return std::make_pair(add(expertBase, mul(column, idx(cfg.k))), valid);
      };
      op.movingPart = [this](Value kTile, Value column) {
        Value kIndex = add(mul(kTile, idx(cfg.tileK)), column);
        return std::make_pair(kIndex, lt(kIndex, idx(cfg.k)));
      };
    } else { // [K][N]
      op.outer = cfg.tileK;
      op.inner = cfg.tileN;
      op.kIsOuter = true;
      op.fixedPart = [this, tile](Value column) {
        return mapBColumn(tile, column);
      };
      op.movingPart = [this, expertBase](Value kTile, Value row) {
        Value kIndex = add(mul(kTile, idx(cfg.tileK)), row);
        return std::make_pair(add(expertBase, mul(kIndex, idx(cfg.n))),
                              lt(kIndex, idx(cfg.k)));
      };
    }
    return op;
  }

  // This thread's chunks of an operand tile, with the K-invariant part of
  // their addresses (gather loads included) computed once, before the loop.
  SmallVector<Chunk> planChunks(const OperandTile &op) {
    const int64_t chunksPerOuter = op.inner / kChunkElements;
    const int64_t total = op.outer * chunksPerOuter;
    const int64_t perThread = (total + cfg.threads() - 1) / cfg.threads();
    SmallVector<Chunk> chunks;
    for (int64_t j = 0; j < perThread; ++j) {
      Chunk chunk;
      Value linear = add(threadId, idx(j * cfg.threads()));
      if ((j + 1) * cfg.threads() > total) {
        chunk.inRange = lt(linear, idx(total));
        linear = arith::MinUIOp::create(b, linear, idx(total - 1));
      }
      chunk.outer = divu(linear, idx(chunksPerOuter));
      chunk.inner = mul(remu(linear, idx(chunksPerOuter)), idx(kChunkElements));
      std::tie(chunk.fixedOffset, chunk.fixedValid) =
          op.fixedPart(op.kIsOuter ? chunk.inner : chunk.outer);
      chunks.push_back(chunk);
    }
    return chunks;
  }

  // Starts the copies of K tile `kTile` into stage `stage`; chunks outside
  // the matrix read nothing and zero-fill shared memory.
  void issueCopies(const OperandTile &op, ArrayRef<Chunk> chunks, Value kTile,
                   Value stage) {
    for (const Chunk &chunk : chunks) {
      auto copy = [&] {
        auto [movingOffset, movingValid] =
            op.movingPart(kTile, op.kIsOuter ? chunk.outer : chunk.inner);
        Value valid = land(chunk.fixedValid, movingValid);
        Value offset =
            select(valid, add(chunk.fixedOffset, movingOffset), idx(0));
        Value sourceElements = select(valid, idx(kChunkElements), idx(0));
        nvgpu::DeviceAsyncCopyOp::create(
            b, op.shared, ValueRange{stage, chunk.outer, chunk.inner},
            op.global, ValueRange{offset}, b.getIndexAttr(kChunkElements),
            sourceElements, b.getUnitAttr());
      };
      if (chunk.inRange)
        when(chunk.inRange, copy);
      else
        copy();
    }
  }

  // Varlen-K B rows scaled by the router score: each thread scales the chunks
  // it copied itself, after its own cp.async group completed.
  void scaleRows(const OperandTile &op, ArrayRef<Chunk> chunks, Value kTile,
                 Value stage, const CtaTile &tile) {
    auto vectorType = VectorType::get({kChunkElements}, cfg.element);
    auto f32Vector = VectorType::get({kChunkElements}, b.getF32Type());
    for (const Chunk &chunk : chunks) {
      Value grouped = add(add(tile.rowBegin, mul(kTile, idx(cfg.tileK))),
                          chunk.outer);
      Value valid = lt(grouped, tile.rowEnd);
      if (chunk.inRange)
        valid = land(valid, chunk.inRange);
      when(valid, [&] {
        SmallVector<Value, 3> indices{stage, chunk.outer, chunk.inner};
        Value data = vector::LoadOp::create(b, vectorType, op.shared, indices);
        Value wide = arith::ExtFOp::create(b, f32Vector, data);
        Value score = vector::BroadcastOp::create(b, f32Vector,
                                                  load(args.scale, grouped));
        Value scaled = arith::TruncFOp::create(
            b, vectorType, arith::MulFOp::create(b, wide, score));
        vector::StoreOp::create(b, scaled, op.shared, indices);
      });
    }
  }

  // --- main loop ----------------------------------------------------------
  void emitTile(const CtaTile &tile) {
    OperandTile opA = operandA(tile), opB = operandB(tile);
    SmallVector<Chunk> chunksA = planChunks(opA), chunksB = planChunks(opB);
    const bool scalesB = cfg.scaleBRows && !cfg.varlenM;

    for (int64_t s = 0; s + 1 < cfg.stages; ++s) {
      issueCopies(opA, chunksA, idx(s), idx(s));
      issueCopies(opB, chunksB, idx(s), idx(s));
      NVVM::CpAsyncCommitGroupOp::create(b);
    }

    const int64_t accumulators = cfg.mmaTilesM() * cfg.mmaTilesN() * 4;
    SmallVector<Value> zeros(accumulators, f32(0.0));
    auto loop = scf::ForOp::create(b, idx(0), tile.kTiles, idx(1), zeros);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      Value kTile = loop.getInductionVar();
      Value stage = remu(kTile, idx(cfg.stages));
      NVVM::CpAsyncWaitGroupOp::create(b, b.getI32IntegerAttr(cfg.stages - 2));
      if (scalesB)
        scaleRows(opB, chunksB, kTile, stage, tile);
      gpu::BarrierOp::create(b);
      Value nextTile = add(kTile, idx(cfg.stages - 1));
      Value nextStage = remu(nextTile, idx(cfg.stages));
      issueCopies(opA, chunksA, nextTile, nextStage);
      issueCopies(opB, chunksB, nextTile, nextStage);
      NVVM::CpAsyncCommitGroupOp::create(b);
      SmallVector<Value> acc(loop.getRegionIterArgs().begin(),
                             loop.getRegionIterArgs().end());
      for (int64_t kStep = 0; kStep < cfg.tileK / kMmaK; ++kStep)
        emitMmaStep(stage, kStep, acc);
      scf::YieldOp::create(b, acc);
    }
    NVVM::CpAsyncWaitGroupOp::create(b, b.getI32IntegerAttr(0));
    SmallVector<Value> acc(loop.getResults().begin(), loop.getResults().end());
    emitEpilogue(tile, acc);
  }

  static int64_t accIndex(const GemmConfig &cfg, int64_t i, int64_t j,
                          int64_t e) {
    return (i * cfg.mmaTilesN() + j) * 4 + e;
  }

  // mma operand registers from an ldmatrix result: bf16 pairs go as i32.
  SmallVector<Value> fragmentRegisters(Value matrices, int64_t count) {
    SmallVector<Value> regs;
    for (int64_t r = 0; r < count; ++r) {
      Value pair = vector::ExtractOp::create(b, matrices, ArrayRef<int64_t>{r});
      if (cfg.element.isBF16()) {
        Value asInt = vector::BitCastOp::create(
            b, VectorType::get({1}, b.getI32Type()), pair);
        pair = vector::ExtractOp::create(b, asInt, ArrayRef<int64_t>{0});
      }
      regs.push_back(pair);
    }
    return regs;
  }

  Value ldmatrix(Value shared, Value stage, Value row, Value column,
                 bool transpose) {
    auto type = VectorType::get({4, 2}, cfg.element);
    return nvgpu::LdMatrixOp::create(b, type, shared,
                                     ValueRange{stage, row, column}, transpose,
                                     /*numTiles=*/4);
  }

  // One k16 step of the warp tile: ldmatrix the A and B fragments, then
  // mma.sync every (m16, n8) pair.
  void emitMmaStep(Value stage, int64_t kStep, SmallVectorImpl<Value> &acc) {
    Value quad = divu(lane, idx(8)), rowInMatrix = remu(lane, idx(8));
    Value quadLow = remu(quad, idx(2)), quadHigh = divu(quad, idx(2));
    Value kBase = idx(kStep * kMmaK);

    SmallVector<SmallVector<Value>> fragA;
    for (int64_t i = 0; i < cfg.mmaTilesM(); ++i) {
      Value mBase = add(mul(warpM, idx(cfg.warpTileM())), idx(i * kMmaM));
      Value frag;
      if (cfg.varlenM) // [m][k]: matrices (m lo,k lo) (m hi,k lo) (m lo,k hi) ..
        frag = ldmatrix(sharedA, stage,
                        add(add(mBase, rowInMatrix), mul(quadLow, idx(8))),
                        add(kBase, mul(quadHigh, idx(8))), false);
      else // [k][m]
        frag = ldmatrix(sharedA, stage,
                        add(add(kBase, mul(quadHigh, idx(8))), rowInMatrix),
                        add(mBase, mul(quadLow, idx(8))), true);
      fragA.push_back(fragmentRegisters(frag, 4));
    }
    SmallVector<SmallVector<Value>> fragB;
    for (int64_t jj = 0; jj < cfg.mmaTilesN() / 2; ++jj) {
      Value nBase = add(mul(warpN, idx(cfg.warpTileN())), idx(jj * 2 * kMmaN));
      Value frag;
      if (cfg.bKContiguous) // [n][k]: matrices (n lo,k lo) (n lo,k hi) ..
        frag = ldmatrix(sharedB, stage,
                        add(add(nBase, mul(quadHigh, idx(8))), rowInMatrix),
                        add(kBase, mul(quadLow, idx(8))), false);
      else // [k][n]
        frag = ldmatrix(sharedB, stage,
                        add(add(kBase, mul(quadLow, idx(8))), rowInMatrix),
                        add(nBase, mul(quadHigh, idx(8))), true);
      SmallVector<Value> regs = fragmentRegisters(frag, 4);
      fragB.push_back({regs[0], regs[1]});
      fragB.push_back({regs[2], regs[3]});
    }

    auto ptxType = cfg.element.isBF16() ? NVVM::MMATypes::bf16
                                        : NVVM::MMATypes::f16;
    Type f32Type = b.getF32Type();
    auto resultType = LLVM::LLVMStructType::getLiteral(
        b.getContext(), {f32Type, f32Type, f32Type, f32Type});
    for (int64_t i = 0; i < cfg.mmaTilesM(); ++i) {
      for (int64_t j = 0; j < cfg.mmaTilesN(); ++j) {
        SmallVector<Value> c;
        for (int64_t e = 0; e < 4; ++e)
          c.push_back(acc[accIndex(cfg, i, j, e)]);
        Value d = NVVM::MmaOp::create(
            b, resultType, fragA[i], fragB[j], c, {kMmaM, kMmaN, kMmaK},
            std::nullopt, std::nullopt,
            std::array<NVVM::MMATypes, 2>{ptxType, ptxType},
            std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                           NVVM::MMALayout::col});
        for (int64_t e = 0; e < 4; ++e)
          acc[accIndex(cfg, i, j, e)] =
              LLVM::ExtractValueOp::create(b, d, ArrayRef<int64_t>{e});
      }
    }
  }

  // --- epilogue -----------------------------------------------------------
  Value toElement(Value f32Value) {
    return arith::TruncFOp::create(b, cfg.element, f32Value);
  }
  Value toF32(Value value) {
    return arith::ExtFOp::create(b, b.getF32Type(), value);
  }
  // Stores two neighbouring elements (4-byte aligned: columns are even).
  void storePair(Value memref, Value offset, Value first, Value second) {
    auto type = VectorType::get({2}, cfg.element);
    Value pair = vector::FromElementsOp::create(
        b, type, ValueRange{toElement(first), toElement(second)});
    vector::StoreOp::create(b, pair, memref, ValueRange{offset},
                            /*nontemporal=*/false, llvm::Align(4));
  }
  std::pair<Value, Value> loadPair(Value memref, Value offset) {
    auto type = VectorType::get({2}, cfg.element);
    Value pair = vector::LoadOp::create(b, type, memref, ValueRange{offset},
                                        /*nontemporal=*/false, llvm::Align(4));
    return {toF32(vector::ExtractOp::create(b, pair, ArrayRef<int64_t>{0})),
            toF32(vector::ExtractOp::create(b, pair, ArrayRef<int64_t>{1}))};
  }

  Value exp(Value x) { // e^x = 2^(x log2 e); ex2.approx is exact enough here
    Value scaled = fmul(x, f32(1.4426950408889634));
    return NVVM::InlinePtxOp::create(b, TypeRange{b.getF32Type()},
                                     ValueRange{scaled}, ValueRange{},
                                     "ex2.approx.ftz.f32 $0, $1;", Value())
        .getResult(0);
  }
  Value tanh(Value x) {
    return NVVM::InlinePtxOp::create(b, TypeRange{b.getF32Type()},
                                     ValueRange{x}, ValueRange{},
                                     "tanh.approx.f32 $0, $1;", Value())
        .getResult(0);
  }
  Value sigmoid(Value x) {
    Value one = f32(1.0);
    return fdiv(one, fadd(one, exp(arith::NegFOp::create(b, x))));
  }
  // gelu(x) = 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2 / pi).
  std::pair<Value, Value> geluAndDerivative(Value x) {
    Value c = f32(0.7978845608028654), a = f32(0.044715), half = f32(0.5),
          one = f32(1.0);
    Value x2 = fmul(x, x);
    Value inner = fmul(c, fadd(x, fmul(a, fmul(x2, x))));
    Value t = tanh(inner);
    Value value = fmul(fmul(half, x), fadd(one, t));
    Value dInner = fmul(c, fadd(one, fmul(f32(3.0 * 0.044715), x2)));
    Value derivative =
        fadd(fmul(half, fadd(one, t)),
             fmul(fmul(fmul(half, x), fsub(one, fmul(t, t))), dInner));
    return {value, derivative};
  }
  // act(x) and act'(x) of the elementwise activation (for GLUs: of the gate).
  std::pair<Value, Value> activationAndDerivative(Value x) {
    switch (cfg.activation) {
    case moe::Activation::SwiGLU: { // silu(x) = x sigmoid(x)
      Value s = sigmoid(x), one = f32(1.0);
      return {fmul(x, s), fmul(s, fadd(one, fmul(x, fsub(one, s))))};
    }
    case moe::Activation::GeGLU:
    case moe::Activation::GeLU:
      return geluAndDerivative(x);
    case moe::Activation::ReLU: {
      Value positive =
          arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, x, f32(0.0));
      return {select(positive, x, f32(0.0)),
              select(positive, f32(1.0), f32(0.0))};
    }
    case moe::Activation::None:
      return {x, f32(1.0)};
    }
    llvm_unreachable("unknown activation");
  }
  Value activation(Value gate, Value up) {
    Value a = activationAndDerivative(gate).first;
    return isGated(cfg.activation) ? fmul(a, up) : a;
  }

  void emitEpilogue(const CtaTile &tile, ArrayRef<Value> acc) {
    Value rowInTile = divu(lane, idx(4));
    Value columnInPair = mul(remu(lane, idx(4)), idx(2));
    const bool dActivation = cfg.epilogue == moe::Epilogue::DActivation;
    for (int64_t i = 0; i < cfg.mmaTilesM(); ++i) {
      for (int64_t h = 0; h < 2; ++h) {
        Value row = add(add(mul(warpM, idx(cfg.warpTileM())),
                            idx(i * kMmaM + h * 8)),
                        rowInTile);
        // The output row: grouped row (varlen-M) or row of dW (varlen-K).
        Value outRow, rowValid;
        if (cfg.varlenM) {
          outRow = add(tile.rowBegin, row);
          rowValid = lt(outRow, tile.rowEnd);
        } else {
          Value mIndex = add(mul(tile.mTile, idx(cfg.tileM)), row);
          rowValid = lt(mIndex, idx(cfg.m));
          outRow = add(mul(tile.expert, idx(cfg.m)), mIndex);
        }
        Value rowScale;
        if (cfg.epilogue == moe::Epilogue::ScaleRows || dActivation)
          rowScale = guarded(rowValid, b.getF32Type(),
                             [&] { return load(args.scale, outRow); },
                             f32(0.0));
        Value rowBase = mul(outRow, idx(cfg.cColumns));
        Value partialDs = f32(0.0);
        const int64_t step = cfg.pairsGateUpChunks() ? 2 : 1;
        for (int64_t j = 0; j < cfg.mmaTilesN(); j += step) {
          Value column = add(
              add(mul(warpN, idx(cfg.warpTileN())), idx(j * kMmaN)),
              columnInPair);
          Value v0 = acc[accIndex(cfg, i, j, 2 * h)];
          Value v1 = acc[accIndex(cfg, i, j, 2 * h + 1)];
          if (cfg.pairsGateUpChunks()) {
            Value u0 = acc[accIndex(cfg, i, j + 1, 2 * h)];
            Value u1 = acc[accIndex(cfg, i, j + 1, 2 * h + 1)];
            Value gate = gateColumn(tile, column);
            when(land(rowValid, lt(gate, idx(cfg.n / 2))), [&] {
              storePair(args.c, add(rowBase, gate), v0, v1);
              storePair(args.c, add(rowBase, add(gate, idx(cfg.n / 2))), u0,
                        u1);
              storePair(args.auxOut,
                        add(mul(outRow, idx(cfg.auxColumns)), gate),
                        activation(v0, u0), activation(v1, u1));
            });
            continue;
          }
          Value global = add(mul(tile.nTile, idx(cfg.tileN)), column);
          Value valid = land(rowValid, lt(global, idx(cfg.n)));
          if (dActivation) {
            partialDs = fadd(partialDs,
                             emitDActivation(valid, outRow, global, rowScale,
                                             v0, v1));
            continue;
          }
          when(valid, [&] {
            emitStoreEpilogue(outRow, rowBase, global, rowScale, v0, v1);
          });
        }
        if (dActivation)
          emitRowSumAtomic(partialDs, rowValid, outRow);
      }
    }
  }

  void emitStoreEpilogue(Value outRow, Value rowBase, Value column,
                         Value rowScale, Value v0, Value v1) {
    switch (cfg.epilogue) {
    case moe::Epilogue::Store:
      storePair(args.c, add(rowBase, column), v0, v1);
      return;
    case moe::Epilogue::ScaleRows:
      storePair(args.c, add(rowBase, column), fmul(rowScale, v0),
                fmul(rowScale, v1));
      return;
    case moe::Epilogue::ActForward: {
      storePair(args.c, add(rowBase, column), v0, v1);
      Value auxRow = mul(outRow, idx(cfg.auxColumns));
      if (isGated(cfg.activation)) { // interleaved: (gate j, up j) = (v0, v1)
        memref::StoreOp::create(b, toElement(activation(v0, v1)), args.auxOut,
                                ValueRange{add(auxRow, divu(column, idx(2)))});
        return;
      }
      storePair(args.auxOut, add(auxRow, column), activation(v0, Value()),
                activation(v1, Value()));
      return;
    }
    case moe::Epilogue::DActivation:
      break;
    }
    llvm_unreachable("handled by emitDActivation");
  }

  // dA = (v0, v1) at columns j, j+1 of the n activation columns. Writes
  // dH = dact(H, s dA) and returns this thread's part of
  // dS[row] = sum_j dA[row, j] act(H)[row, j] (zero when invalid).
  Value emitDActivation(Value valid, Value outRow, Value column,
                        Value rowScale, Value v0, Value v1) {
    return guarded(
        valid, b.getF32Type(),
        [&] {
          Value rowBase = mul(outRow, idx(cfg.cColumns));
          const bool gated = isGated(cfg.activation);
          const bool interleaved =
              cfg.gateUp == moe::GateUpLayout::Interleaved;
          // Columns of H/dH holding gate j (and j+1) and up j (and j+1).
          Value gateOffset, upOffset;
          Value g0, g1, u0, u1;
          if (gated && interleaved) {
            gateOffset = add(rowBase, mul(column, idx(2)));
            std::tie(g0, u0) = loadPair(args.auxIn, gateOffset);
            std::tie(g1, u1) = loadPair(args.auxIn, add(gateOffset, idx(2)));
          } else {
            gateOffset = add(rowBase, column);
            std::tie(g0, g1) = loadPair(args.auxIn, gateOffset);
            if (gated) {
              upOffset = add(gateOffset, idx(cfg.n));
              std::tie(u0, u1) = loadPair(args.auxIn, upOffset);
            }
          }
          Value ds = f32(0.0);
          SmallVector<Value> dGate, dUp;
          for (auto [dA, g, u] : {std::tuple{v0, g0, u0}, {v1, g1, u1}}) {
            auto [act, dAct] = activationAndDerivative(g);
            Value scaled = fmul(rowScale, dA);
            if (gated) {
              ds = fadd(ds, fmul(dA, fmul(act, u)));
              dGate.push_back(fmul(fmul(scaled, u), dAct));
              dUp.push_back(fmul(scaled, act));
            } else {
              ds = fadd(ds, fmul(dA, act));
              dGate.push_back(fmul(scaled, dAct));
            }
          }
          if (gated && interleaved) {
            storePair(args.c, gateOffset, dGate[0], dUp[0]);
            storePair(args.c, add(gateOffset, idx(2)), dGate[1], dUp[1]);
          } else {
            storePair(args.c, gateOffset, dGate[0], dGate[1]);
            if (gated)
              storePair(args.c, upOffset, dUp[0], dUp[1]);
          }
          return ds;
        },
        f32(0.0));
  }

  // The four lanes of a quad share a row: reduce over them, then one
  // atomic add per row and warp.
  void emitRowSumAtomic(Value partial, Value rowValid, Value outRow) {
    for (int32_t offset : {1, 2}) {
      Value other = gpu::ShuffleOp::create(b, partial, offset, kWarpSize,
                                           gpu::ShuffleMode::XOR)
                        .getShuffleResult();
      partial = fadd(partial, other);
    }
    Value leader = arith::CmpIOp::create(b, arith::CmpIPredicate::eq,
                                         remu(lane, idx(4)), idx(0));
    when(land(leader, rowValid), [&] {
      memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addf, partial,
                                  args.auxOut, ValueRange{outRow});
    });
  }

  ImplicitLocOpBuilder &b;
  const GemmConfig &cfg;
  KernelArgs args;
  Value threadId, lane, warpM, warpN;
  Value sharedA, sharedB;
};

gpu::GPUModuleOp getOrCreateKernelModule(ModuleOp module) {
  if (auto existing = module.lookupSymbol<gpu::GPUModuleOp>(kKernelModuleName))
    return existing;
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(module.getContext()));
  OpBuilder builder = OpBuilder::atBlockEnd(module.getBody());
  return gpu::GPUModuleOp::create(builder, module.getLoc(), kKernelModuleName);
}

LogicalResult lowerGroupedGemm(moe::GroupedGemmOp op,
                               gpu::GPUModuleOp kernels) {
  if (op.getPath() != moe::KernelPath::Portable)
    return op.emitOpError("code path ")
           << moe::stringifyKernelPath(op.getPath())
           << " is not implemented yet; use path = portable";
  const GemmConfig cfg(op);
  MLIRContext *ctx = op.getContext();
  auto buffer = [](Type element) {
    return MemRefType::get({kUnboundedExtent}, element);
  };
  Type i32 = IntegerType::get(ctx, 32);
  SmallVector<Type> params = {
      buffer(cfg.element),          buffer(cfg.element),
      buffer(cfg.element),          buffer(cfg.element),
      buffer(cfg.auxOutElement(ctx)), buffer(i32),
      buffer(i32),                  buffer(Float32Type::get(ctx)),
      i32};
  assert(params.size() == static_cast<size_t>(KernelArg::Count));

  OpBuilder moduleBuilder = OpBuilder::atBlockEnd(kernels.getBody());
  auto func = gpu::GPUFuncOp::create(moduleBuilder, op.getLoc(),
                                     op.getSymName(),
                                     FunctionType::get(ctx, params, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), UnitAttr::get(ctx));
  func.setKnownBlockSizeAttr(DenseI32ArrayAttr::get(
      ctx, {static_cast<int32_t>(cfg.threads()), 1, 1}));

  ImplicitLocOpBuilder builder(op.getLoc(), ctx);
  builder.setInsertionPointToStart(&func.getBody().front());
  Block &entry = func.getBody().front();
  KernelArgs args{entry.getArgument(0), entry.getArgument(1),
                  entry.getArgument(2), entry.getArgument(3),
                  entry.getArgument(4), entry.getArgument(5),
                  entry.getArgument(6), entry.getArgument(7),
                  entry.getArgument(8)};
  PortableKernelEmitter(builder, cfg, args).emit();
  gpu::ReturnOp::create(builder);
  return success();
}

struct MoeLowerGroupedGemmPass
    : impl::MoeLowerGroupedGemmBase<MoeLowerGroupedGemmPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<moe::GroupedGemmOp> ops;
    module.walk([&](moe::GroupedGemmOp op) { ops.push_back(op); });
    if (ops.empty())
      return;
    gpu::GPUModuleOp kernels = getOrCreateKernelModule(module);
    for (moe::GroupedGemmOp op : ops) {
      if (failed(lowerGroupedGemm(op, kernels)))
        return signalPassFailure();
      op.erase();
    }
  }
};

} // namespace
} // namespace moejit

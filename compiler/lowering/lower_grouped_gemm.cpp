// moe-lower-grouped-gemm: each moe.grouped_gemm becomes a gpu.func kernel.
//
// Portable path (sm_80+): a CTA computes one BM x BN tile of C for one expert.
// A and B tiles stream through a `stages`-deep ring of shared-memory buffers
// filled by 16-byte cp.async copies (zero-filled outside the matrix), warps
// read mma fragments with ldmatrix and accumulate in fp32 registers with
// mma.sync m16n8k16; the epilogue goes from registers straight to global
// memory, every store predicated on the bounds.
#include "compiler/dialect/moe_dialect.h"
#include "compiler/lowering/kernel_common.h"
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

#include <functional>

namespace moejit {

#define GEN_PASS_DEF_MOELOWERGROUPEDGEMM
#include "compiler/lowering/passes.h.inc"

using namespace mlir;
using namespace moejit::lowering;

namespace {

constexpr int64_t kChunkElements = 8; // one 16-byte cp.async of bf16/fp16
constexpr int64_t kMmaM = 16, kMmaN = 8, kMmaK = 16;

// The op's attributes plus the portable warp tiling.
struct GemmConfig : GroupedGemmAttrs {
  explicit GemmConfig(moe::GroupedGemmOp op)
      : GroupedGemmAttrs(op), warpsM(op.getWarps()[0]), warpsN(op.getWarps()[1]),
        layout(portableTileLayout(
            TileShape{static_cast<int>(tileM), static_cast<int>(tileN), static_cast<int>(tileK)},
            varlenM ? Varlen::M : Varlen::K, bKContiguous)) {}

  int64_t threads() const { return kWarpSize * warpsM * warpsN; }
  int64_t warpTileM() const { return tileM / warpsM; }
  int64_t warpTileN() const { return tileN / warpsN; }
  int64_t mmaTilesM() const { return warpTileM() / kMmaM; }
  int64_t mmaTilesN() const { return warpTileN() / kMmaN; }

  int64_t warpsM, warpsN;
  PortableTileLayout layout;
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

class PortableKernelEmitter : GroupedGemmEmitter {
public:
  PortableKernelEmitter(ImplicitLocOpBuilder &builder, const GemmConfig &config,
                        const KernelParams &params)
      : GroupedGemmEmitter(builder, config, params), cfg(config) {}

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
  // --- shared memory ------------------------------------------------------
  void createSharedTiles() {
    Value base = dynamicSharedBytes();
    const PortableTileLayout &l = cfg.layout;
    auto aType = workgroupMemRef({cfg.stages, l.aOuter, l.aInner}, cfg.element);
    auto bType = workgroupMemRef({cfg.stages, l.bOuter, l.bInner}, cfg.element);
    sharedA = memref::ViewOp::create(b, aType, base, idx(0), ValueRange{});
    sharedB = memref::ViewOp::create(
        b, bType, base, idx(cfg.stages * l.aOuter * l.aInner * cfg.elementBytes()), ValueRange{});
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
        return reductionRow(tile, kTile, row, cfg.gatherA, cfg.m);
      };
    }
    return op;
  }

  // Varlen-K: the element offset of row `row` of reduction tile `kTile`
  // within the expert's grouped rows (through the gather when `gathered`),
  // and whether that row exists.
  std::pair<Value, Value> reductionRow(const CtaTile &tile, Value kTile, Value row,
                                       bool gathered, int64_t rowElements) {
    Value grouped = add(add(tile.rowBegin, mul(kTile, idx(cfg.tileK))), row);
    Value valid = lt(grouped, tile.rowEnd);
    Value stored = storedRow(grouped, valid, gathered);
    return std::make_pair(mul(stored, idx(rowElements)), valid);
  }

  OperandTile operandB(const CtaTile &tile) {
    OperandTile op;
    op.global = args.b;
    op.shared = sharedB;
    if (!cfg.varlenM) { // grouped rows [K][N]
      op.outer = cfg.tileK;
      op.inner = cfg.tileN;
      op.kIsOuter = true;
      op.fixedPart = [this, tile](Value column) { return mapBColumn(tile.nTile, column); };
      op.movingPart = [this, tile](Value kTile, Value row) {
        return reductionRow(tile, kTile, row, cfg.gatherB, cfg.n);
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
        auto [column, valid] = mapBColumn(tile.nTile, row);
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
      op.fixedPart = [this, tile](Value column) { return mapBColumn(tile.nTile, column); };
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
    SmallVector<Chunk> chunks;
    forEachThreadItem(threadId, cfg.threads(), op.outer * chunksPerOuter,
                      [&](Value linear, Value inRange) {
                        Chunk chunk;
                        chunk.inRange = inRange;
                        chunk.outer = divu(linear, idx(chunksPerOuter));
                        chunk.inner = mul(remu(linear, idx(chunksPerOuter)), idx(kChunkElements));
                        std::tie(chunk.fixedOffset, chunk.fixedValid) =
                            op.fixedPart(op.kIsOuter ? chunk.inner : chunk.outer);
                        chunks.push_back(chunk);
                      });
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
      whenSet(chunk.inRange, copy);
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
  void emitEpilogue(const CtaTile &tile, ArrayRef<Value> acc) {
    Value rowInTile = fragmentRow();
    Value columnInPair = fragmentColumn();
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
        emitEpilogueRow(
            tile.nTile, outRow, rowValid, cfg.mmaTilesN(),
            [&](int64_t j) {
              return add(add(mul(warpN, idx(cfg.warpTileN())), idx(j * kMmaN)), columnInPair);
            },
            [&](int64_t j, int64_t e) { return acc[accIndex(cfg, i, j, 2 * h + e)]; });
      }
    }
  }

  const GemmConfig &cfg;
  Value threadId, warpM, warpN;
  Value sharedA, sharedB;
};

LogicalResult lowerGroupedGemm(moe::GroupedGemmOp op,
                               gpu::GPUModuleOp kernels) {
  if (op.getPath() != moe::KernelPath::Portable)
    return op.emitOpError("code path ")
           << moe::stringifyKernelPath(op.getPath())
           << " is not implemented yet; use path = portable";
  const GemmConfig cfg(op);
  buildKernel(op, kernels, cfg.threads(),
              [&](ImplicitLocOpBuilder &builder, const KernelParams &params) {
                PortableKernelEmitter(builder, cfg, params).emit();
              });
  return success();
}

struct MoeLowerGroupedGemmPass
    : impl::MoeLowerGroupedGemmBase<MoeLowerGroupedGemmPass> {
  void runOnOperation() override {
    if (failed(lowerGroupedGemmOps(
            getOperation(), [](moe::GroupedGemmOp) { return true; }, lowerGroupedGemm)))
      signalPassFailure();
  }
};

} // namespace
} // namespace moejit

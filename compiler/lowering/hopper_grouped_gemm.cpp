// moe-lower-grouped-gemm-hopper: the sm_90a code path of moe.grouped_gemm
// (ops with path = hopper; the others are left to moe-lower-grouped-gemm).
//
// A CTA computes one tile.m x tile.n tile of C for one expert (varlen-M) with
// one warpgroup per 64 rows. A (gathered rows, K contiguous) and B stream
// through a `stages`-deep ring of shared-memory stages filled by 16-byte
// cp.async copies straight into the 128B-swizzle layout that wgmma's matrix
// descriptors describe: every stage row is 128 bytes (64 bf16/fp16 of K for
// A and K-contiguous B; 64 columns of N for N-contiguous B), and 16-byte
// chunk c of row r lands in chunk c ^ (r % 8). Each warpgroup issues
// wgmma.mma_async m64nNk16 (N = tile.n) with fp32 accumulators in registers,
// keeping one wgmma group in flight while the copies of later stages run.
// The epilogue goes from the accumulator registers to global memory, every
// store predicated on the bounds; the wgmma accumulator fragment of a warp
// is the mma.sync m16n8 one repeated over N, so the epilogues are those of
// the portable path.
#include "compiler/dialect/moe_dialect.h"
#include "compiler/lowering/kernel_signature.h"
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

namespace moejit {

#define GEN_PASS_DEF_MOELOWERGROUPEDGEMMHOPPER
#include "compiler/lowering/passes.h.inc"

using namespace mlir;

namespace {

constexpr int64_t kWarpSize = 32;
constexpr int64_t kWarpgroupThreads = 128;
constexpr int64_t kWgmmaM = 64, kWgmmaK = 16;
constexpr int64_t kChunkBytes = 16; // one cp.async
constexpr int64_t kRowBytes = HopperTileLayout::kRowBytes;
constexpr int64_t kChunksPerRow = kRowBytes / kChunkBytes;
// Rows of one 128B swizzle atom: 8 rows of 128 bytes, 1024 bytes.
constexpr int64_t kSwizzleRows = 8;
constexpr int64_t kSwizzleAtomBytes = kSwizzleRows * kRowBytes;
// Columns of an N-contiguous B block: one 128-byte row of 16-bit elements.
constexpr int64_t kBlockColumns = 64;

bool isGated(moe::Activation act) {
  return act == moe::Activation::SwiGLU || act == moe::Activation::GeGLU;
}

// The op's attributes as plain values, plus the shapes derived from them.
struct HopperConfig {
  explicit HopperConfig(moe::GroupedGemmOp op)
      : element(op.getElementType()), experts(op.getExperts()),
        n(op.getN()), k(op.getK()), bKContiguous(op.getBKContiguous()),
        gatherA(op.getGatherA()), epilogue(op.getEpilogue()),
        activation(op.getActivation()), gateUp(op.getGateUp()),
        cColumns(op.getCColumns()), auxColumns(op.getAuxColumns()),
        tileM(op.getTile()[0]), tileN(op.getTile()[1]), tileK(op.getTile()[2]),
        stages(op.getStages()) {
    layout = hopperTileLayout(TileShape{static_cast<int>(tileM),
                                        static_cast<int>(tileN),
                                        static_cast<int>(tileK)});
    Schedule schedule;
    schedule.tile = {static_cast<int>(tileM), static_cast<int>(tileN),
                     static_cast<int>(tileK)};
    threads = hopperThreads(schedule);
  }

  int64_t elementBytes() const { return element.getIntOrFloatBitWidth() / 8; }
  int64_t rowElements() const { return kRowBytes / elementBytes(); }
  int64_t chunkElements() const { return kChunkBytes / elementBytes(); }
  int64_t accumulators() const { return tileN / 2; } // per thread
  int64_t n8Blocks() const { return tileN / 8; }
  bool pairsGateUpChunks() const {
    return epilogue == moe::Epilogue::ActForward && isGated(activation) &&
           gateUp == moe::GateUpLayout::Concatenated;
  }

  Type element;
  int64_t experts, n, k;
  bool bKContiguous, gatherA;
  moe::Epilogue epilogue;
  moe::Activation activation;
  moe::GateUpLayout gateUp;
  int64_t cColumns, auxColumns;
  int64_t tileM, tileN, tileK, stages;
  int64_t threads = 0;
  HopperTileLayout layout;
};

// This CTA's expert and rows.
struct CtaTile {
  Value expert, rowBegin, rowEnd, nTile, kTiles;
};

// One 16-byte chunk a thread copies every stage: where it lands in the stage
// (element offset, swizzled), the K-invariant part of its global offset and
// validity, and the part of its coordinates that moves with the K tile.
struct Chunk {
  Value sharedOffset;
  Value fixedOffset, fixedValid;
  Value kInTile;  // row (B N-contiguous) or column (A, B K-contiguous) in K
  Value inRange;  // null when every thread's chunk exists
};

class HopperKernelEmitter {
public:
  HopperKernelEmitter(ImplicitLocOpBuilder &builder, const HopperConfig &config,
                      const KernelParams &params)
      : b(builder), cfg(config), args(params) {}

  void emit() {
    threadId = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    lane = remu(threadId, idx(kWarpSize));
    warp = divu(threadId, idx(kWarpSize));
    warpgroup = divu(threadId, idx(kWarpgroupThreads));
    createSharedStages();
    emitVarlenM();
  }

private:
  // --- small arithmetic helpers -------------------------------------------
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value i64(int64_t v) {
    return arith::ConstantOp::create(b, b.getI64IntegerAttr(v));
  }
  Value f32(double v) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(v));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value divu(Value x, Value y) { return arith::DivUIOp::create(b, x, y); }
  Value remu(Value x, Value y) { return arith::RemUIOp::create(b, x, y); }
  Value xori(Value x, Value y) { return arith::XOrIOp::create(b, x, y); }
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
  Value toIndex(Value v) {
    return arith::IndexCastOp::create(b, b.getIndexType(), v);
  }
  Value toI64(Value index) {
    return arith::IndexCastUIOp::create(b, b.getI64Type(), index);
  }
  Value load(Value memref, Value index) {
    return memref::LoadOp::create(b, memref, ValueRange{index});
  }
  Value loadIndex(Value memref, Value index) {
    return toIndex(load(memref, index));
  }

  // `cond ? thenValue() : elseValue`, running thenValue's ops only under cond.
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

  // --- shared memory ------------------------------------------------------
  // One flat array of elements: the A stages, then the B stages. The swizzle
  // pattern is a function of the address bits, so the base is aligned to a
  // swizzle atom at run time (the launch asks for the slack).
  void createSharedStages() {
    MLIRContext *ctx = b.getContext();
    auto workgroup =
        gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
    auto bytes = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                 MemRefLayoutAttrInterface{}, workgroup);
    Value raw = gpu::DynamicSharedMemoryOp::create(b, bytes);
    Value rawAddress =
        memref::ExtractAlignedPointerAsIndexOp::create(b, raw);
    constexpr int64_t align = HopperTileLayout::kAlignBytes;
    Value shift = remu(sub(idx(align), remu(rawAddress, idx(align))),
                       idx(align));
    const int64_t totalBytes =
        cfg.stages * (cfg.layout.aStageBytes + cfg.layout.bStageBytes);
    auto type = MemRefType::get({totalBytes / cfg.elementBytes()}, cfg.element,
                                MemRefLayoutAttrInterface{}, workgroup);
    shared = memref::ViewOp::create(b, type, raw, shift, ValueRange{});
    sharedAddress = toI64(add(rawAddress, shift));
    bBaseBytes = cfg.stages * cfg.layout.aStageBytes;
  }

  // --- CTA -> work ----------------------------------------------------------
  // Block x = slot * nTiles + nTile, N tiles fastest: the CTAs that share an
  // A tile (gathered rows) run together and read it from L2, not HBM. The
  // slot indexes the list of all experts' M tiles; the CTA walks the
  // experts' tile counts to find its expert; slots past the last tile exit.
  void emitVarlenM() {
    Value block = gpu::BlockIdOp::create(b, gpu::Dimension::x);
    const int64_t nTiles = (cfg.n + cfg.tileN - 1) / cfg.tileN;
    Value slot = divu(block, idx(nTiles));
    Value nTile = remu(block, idx(nTiles));
    Value experts = idx(cfg.experts);
    Type indexType = b.getIndexType();
    auto whileOp = scf::WhileOp::create(
        b, TypeRange{indexType, indexType, indexType},
        ValueRange{idx(0), slot});
    {
      OpBuilder::InsertionGuard guard(b);
      Block *before = b.createBlock(&whileOp.getBefore(), {},
                                    {indexType, indexType},
                                    {b.getLoc(), b.getLoc()});
      Value expert = before->getArgument(0), remaining = before->getArgument(1);
      Value inRange = lt(expert, experts);
      Value tiles = guarded(
          inRange, indexType,
          [&] {
            Value begin = loadIndex(args.offsets, expert);
            Value end = loadIndex(args.offsets, add(expert, idx(1)));
            return ceilDiv(sub(end, begin), cfg.tileM);
          },
          idx(0));
      Value notHere = land(
          inRange, arith::CmpIOp::create(b, arith::CmpIPredicate::sge,
                                         remaining, tiles));
      scf::ConditionOp::create(b, notHere,
                               ValueRange{expert, remaining, tiles});
      Block *after = b.createBlock(&whileOp.getAfter(), {},
                                   {indexType, indexType, indexType},
                                   {b.getLoc(), b.getLoc(), b.getLoc()});
      scf::YieldOp::create(
          b, ValueRange{add(after->getArgument(0), idx(1)),
                        sub(after->getArgument(1), after->getArgument(2))});
    }
    Value expert = whileOp.getResult(0), localTile = whileOp.getResult(1);
    when(lt(expert, experts), [&] {
      CtaTile tile;
      tile.expert = expert;
      tile.rowBegin =
          add(loadIndex(args.offsets, expert), mul(localTile, idx(cfg.tileM)));
      tile.rowEnd = loadIndex(args.offsets, add(expert, idx(1)));
      tile.nTile = nTile;
      tile.kTiles = idx((cfg.k + cfg.tileK - 1) / cfg.tileK);
      emitTile(tile);
    });
  }

  // Tile-local column of B/C -> (global column of B, valid). With paired
  // gate/up chunks the tile takes 8-column chunks alternately from the gate
  // and the up half, so a thread holds gate j and up j in neighbouring n8
  // accumulator blocks.
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
  Value gateColumn(const CtaTile &tile, Value column) {
    Value pairBase = mul(divu(column, idx(16)), idx(8));
    return add(add(mul(tile.nTile, idx(cfg.tileN / 2)), pairBase),
               remu(column, idx(8)));
  }

  // --- copies -------------------------------------------------------------
  // Element offset of 16-byte chunk `chunk` of 128-byte row `row` inside a
  // region whose rows are consecutive: the chunk index is XORed with the row
  // inside its swizzle atom.
  Value swizzledOffset(Value row, Value chunk) {
    Value physical = xori(chunk, remu(row, idx(kSwizzleRows)));
    return add(mul(row, idx(cfg.rowElements())),
               mul(physical, idx(cfg.chunkElements())));
  }

  // Chunks of a `rows` x 128-byte region: thread t takes t, t + threads, ...
  template <typename PlanOne>
  SmallVector<Chunk> planChunks(int64_t total, PlanOne planOne) {
    const int64_t perThread = (total + cfg.threads - 1) / cfg.threads;
    SmallVector<Chunk> chunks;
    for (int64_t j = 0; j < perThread; ++j) {
      Value linear = add(threadId, idx(j * cfg.threads));
      Value inRange;
      if ((j + 1) * cfg.threads > total) {
        inRange = lt(linear, idx(total));
        linear = arith::MinUIOp::create(b, linear, idx(total - 1));
      }
      Chunk chunk = planOne(linear);
      chunk.inRange = inRange;
      chunks.push_back(chunk);
    }
    return chunks;
  }

  // A: tile.m rows of K (gathered token rows), K contiguous.
  SmallVector<Chunk> planChunksA(const CtaTile &tile) {
    return planChunks(cfg.tileM * kChunksPerRow, [&](Value linear) {
      Chunk chunk;
      Value row = divu(linear, idx(kChunksPerRow));
      Value column = remu(linear, idx(kChunksPerRow));
      chunk.sharedOffset = swizzledOffset(row, column);
      Value grouped = add(tile.rowBegin, row);
      chunk.fixedValid = lt(grouped, tile.rowEnd);
      Value stored = grouped;
      if (cfg.gatherA)
        stored = guarded(chunk.fixedValid, b.getIndexType(),
                         [&] { return loadIndex(args.gather, grouped); },
                         idx(0));
      chunk.fixedOffset = mul(stored, idx(cfg.k));
      chunk.kInTile = mul(column, idx(cfg.chunkElements()));
      return chunk;
    });
  }

  // B: the expert's weights, E matrices back to back (64-bit offsets).
  SmallVector<Chunk> planChunksB(const CtaTile &tile) {
    Value expertBase = mul(tile.expert, idx(cfg.k * cfg.n));
    if (cfg.bKContiguous) // [N][K]: tile.n rows of K
      return planChunks(cfg.tileN * kChunksPerRow, [&](Value linear) {
        Chunk chunk;
        Value row = divu(linear, idx(kChunksPerRow));
        Value column = remu(linear, idx(kChunksPerRow));
        chunk.sharedOffset = swizzledOffset(row, column);
        auto [global, valid] = mapBColumn(tile, row);
        chunk.fixedOffset = add(expertBase, mul(global, idx(cfg.k)));
        chunk.fixedValid = valid;
        chunk.kInTile = mul(column, idx(cfg.chunkElements()));
        return chunk;
      });
    // [K][N]: tile.n / 64 blocks of tile.k rows of 64 columns.
    const int64_t chunksPerKRow = cfg.tileN / cfg.chunkElements();
    return planChunks(cfg.tileK * chunksPerKRow, [&](Value linear) {
      Chunk chunk;
      Value kRow = divu(linear, idx(chunksPerKRow));
      Value nChunk = remu(linear, idx(chunksPerKRow));
      Value block = divu(nChunk, idx(kChunksPerRow));
      Value blockRow = add(mul(block, idx(cfg.tileK)), kRow);
      chunk.sharedOffset =
          swizzledOffset(blockRow, remu(nChunk, idx(kChunksPerRow)));
      auto [global, valid] =
          mapBColumn(tile, mul(nChunk, idx(cfg.chunkElements())));
      chunk.fixedOffset = add(expertBase, global);
      chunk.fixedValid = valid;
      chunk.kInTile = kRow;
      return chunk;
    });
  }

  // Starts the copies of K tile `kTile` into stage `stage`; chunks outside
  // the matrix read nothing and zero-fill shared memory.
  void issueCopies(ArrayRef<Chunk> chunks, Value global, Value stageBase,
                   Value kTile, bool kIsRow) {
    for (const Chunk &chunk : chunks) {
      auto copy = [&] {
        Value kIndex = add(mul(kTile, idx(cfg.tileK)), chunk.kInTile);
        Value valid = land(chunk.fixedValid, lt(kIndex, idx(cfg.k)));
        Value moving = kIsRow ? mul(kIndex, idx(cfg.n)) : kIndex;
        Value offset = select(valid, add(chunk.fixedOffset, moving), idx(0));
        Value sourceElements =
            select(valid, idx(cfg.chunkElements()), idx(0));
        nvgpu::DeviceAsyncCopyOp::create(
            b, shared, ValueRange{add(stageBase, chunk.sharedOffset)}, global,
            ValueRange{offset}, b.getIndexAttr(cfg.chunkElements()),
            sourceElements, b.getUnitAttr());
      };
      if (chunk.inRange)
        when(chunk.inRange, copy);
      else
        copy();
    }
  }

  void issueStage(ArrayRef<Chunk> chunksA, ArrayRef<Chunk> chunksB,
                  Value kTile) {
    Value stage = remu(kTile, idx(cfg.stages));
    const int64_t aStageElements = cfg.layout.aStageBytes / cfg.elementBytes();
    const int64_t bStageElements = cfg.layout.bStageBytes / cfg.elementBytes();
    issueCopies(chunksA, args.a, mul(stage, idx(aStageElements)), kTile,
                /*kIsRow=*/false);
    issueCopies(chunksB, args.b,
                add(idx(bBaseBytes / cfg.elementBytes()),
                    mul(stage, idx(bStageElements))),
                kTile, /*kIsRow=*/!cfg.bKContiguous);
    NVVM::CpAsyncCommitGroupOp::create(b);
  }

  // --- wgmma --------------------------------------------------------------
  // A shared-memory matrix descriptor: start address, leading and stride
  // byte offsets (each encoded >> 4) and the 128B swizzle mode.
  static int64_t descriptorBits(int64_t leadingBytes, int64_t strideBytes) {
    constexpr int64_t kSwizzle128B = 1;
    return ((leadingBytes >> 4) << 16) | ((strideBytes >> 4) << 32) |
           (kSwizzle128B << 62);
  }
  Value descriptor(Value byteAddress, int64_t bits) {
    Value encoded = arith::ShRUIOp::create(
        b, arith::AndIOp::create(b, byteAddress, i64(0x3FFFF)), i64(4));
    return arith::OrIOp::create(b, encoded, i64(bits));
  }

  Value wgmma(Value acc, Value descA, Value descB) {
    auto typeOf = [&] {
      return cfg.element.isBF16() ? NVVM::WGMMATypes::bf16
                                  : NVVM::WGMMATypes::f16;
    };
    MLIRContext *ctx = b.getContext();
    return NVVM::WgmmaMmaAsyncOp::create(
        b, acc.getType(), acc, descA, descB,
        NVVM::MMAShapeAttr::get(ctx, kWgmmaM, cfg.tileN, kWgmmaK),
        NVVM::WGMMATypesAttr::get(ctx, typeOf()),
        NVVM::WGMMATypesAttr::get(ctx, typeOf()),
        NVVM::WGMMATypesAttr::get(ctx, NVVM::WGMMATypes::f32),
        NVVM::WGMMAScaleOutAttr::get(ctx, NVVM::WGMMAScaleOut::one),
        NVVM::WGMMAScaleInAttr::get(ctx, NVVM::WGMMAScaleIn::one),
        NVVM::WGMMAScaleInAttr::get(ctx, NVVM::WGMMAScaleIn::one),
        NVVM::MMALayoutAttr::get(ctx, NVVM::MMALayout::row),
        // col: B K-major; row: B N-major (transposed).
        NVVM::MMALayoutAttr::get(ctx, cfg.bKContiguous ? NVVM::MMALayout::col
                                                       : NVVM::MMALayout::row),
        NVVM::MMAIntOverflowAttr());
  }

  // The wgmmas of one stage for this warpgroup's 64 rows.
  Value emitStageMma(Value stage, Value acc) {
    Value aStage = add(
        sharedAddress,
        toI64(add(mul(stage, idx(cfg.layout.aStageBytes)),
                  mul(warpgroup, idx(kWgmmaM * kRowBytes)))));
    Value bStage = add(sharedAddress,
                       toI64(add(idx(bBaseBytes),
                                 mul(stage, idx(cfg.layout.bStageBytes)))));
    // K-major operands: rows of 128 bytes, 8-row atoms 1024 bytes apart, a
    // k16 step is 32 bytes into the row. N-major B: 64-column blocks
    // tile.k rows apart, 8-row atoms along K, a k16 step is 16 rows.
    const int64_t kMajorBits = descriptorBits(kChunkBytes, kSwizzleAtomBytes);
    const int64_t nMajorBits =
        descriptorBits(cfg.tileK * kRowBytes, kSwizzleAtomBytes);
    const int64_t kStepBytes = kWgmmaK * cfg.elementBytes();
    NVVM::WgmmaFenceAlignedOp::create(b);
    for (int64_t step = 0; step < cfg.tileK / kWgmmaK; ++step) {
      Value descA =
          descriptor(add(aStage, i64(step * kStepBytes)), kMajorBits);
      Value descB =
          cfg.bKContiguous
              ? descriptor(add(bStage, i64(step * kStepBytes)), kMajorBits)
              : descriptor(add(bStage, i64(step * kWgmmaK * kRowBytes)),
                           nMajorBits);
      acc = wgmma(acc, descA, descB);
    }
    NVVM::WgmmaGroupSyncAlignedOp::create(b);
    return acc;
  }

  // --- main loop ----------------------------------------------------------
  // Stage s of K tile t is t % stages. At iteration t: this thread's copies
  // of tile t are complete (cp.async.wait_group), made visible to the async
  // proxy that wgmma reads through, and the barrier publishes every thread's
  // copies; the barrier also proves every warpgroup has retired the wgmmas
  // of tile t - 2 (wait_group 1 of iteration t - 1), so tile t + stages - 2
  // may overwrite that stage. Copies run stages - 2 tiles ahead; one wgmma
  // group stays in flight under the next iteration's wait and barrier.
  void emitTile(const CtaTile &tile) {
    SmallVector<Chunk> chunksA = planChunksA(tile);
    SmallVector<Chunk> chunksB = planChunksB(tile);
    const int64_t ahead = cfg.stages - 2;
    for (int64_t t = 0; t < ahead; ++t)
      issueStage(chunksA, chunksB, idx(t));

    Type f32Type = b.getF32Type();
    SmallVector<Type> fields(cfg.accumulators(), f32Type);
    auto accType = LLVM::LLVMStructType::getLiteral(b.getContext(), fields);
    Value acc = LLVM::UndefOp::create(b, accType);
    Value zero = f32(0.0);
    for (int64_t i = 0; i < cfg.accumulators(); ++i)
      acc = LLVM::InsertValueOp::create(b, acc, zero, ArrayRef<int64_t>{i});

    auto loop = scf::ForOp::create(b, idx(0), tile.kTiles, idx(1),
                                   ValueRange{acc});
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      Value kTile = loop.getInductionVar();
      NVVM::CpAsyncWaitGroupOp::create(b, b.getI32IntegerAttr(ahead - 1));
      NVVM::FenceProxyOp::create(
          b, NVVM::ProxyKindAttr::get(b.getContext(),
                                      NVVM::ProxyKind::async_shared),
          NVVM::SharedSpaceAttr::get(b.getContext(),
                                     NVVM::SharedSpace::shared_cta));
      gpu::BarrierOp::create(b);
      issueStage(chunksA, chunksB, add(kTile, idx(ahead)));
      Value next = emitStageMma(remu(kTile, idx(cfg.stages)),
                                loop.getRegionIterArgs()[0]);
      NVVM::WgmmaWaitGroupSyncOp::create(b, 1);
      scf::YieldOp::create(b, ValueRange{next});
    }
    NVVM::WgmmaWaitGroupSyncOp::create(b, 0);
    NVVM::CpAsyncWaitGroupOp::create(b, b.getI32IntegerAttr(0));
    SmallVector<Value> values;
    for (int64_t i = 0; i < cfg.accumulators(); ++i)
      values.push_back(LLVM::ExtractValueOp::create(b, loop.getResult(0),
                                                    ArrayRef<int64_t>{i}));
    emitEpilogue(tile, values);
  }

  // --- epilogue -----------------------------------------------------------
  // These follow the portable path's epilogue exactly (same math, same
  // stores); they move to a shared epilogue emitter once both paths settle.
  Value toElement(Value f32Value) {
    return arith::TruncFOp::create(b, cfg.element, f32Value);
  }
  Value toF32(Value value) {
    return arith::ExtFOp::create(b, b.getF32Type(), value);
  }
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
  Value exp(Value x) { // e^x = 2^(x log2 e)
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
    Value t = tanh(fmul(c, fadd(x, fmul(a, fmul(x2, x)))));
    Value value = fmul(fmul(half, x), fadd(one, t));
    Value dInner = fmul(c, fadd(one, fmul(f32(3.0 * 0.044715), x2)));
    Value derivative =
        fadd(fmul(half, fadd(one, t)),
             fmul(fmul(fmul(half, x), fsub(one, fmul(t, t))), dInner));
    return {value, derivative};
  }
  std::pair<Value, Value> activationAndDerivative(Value x) {
    switch (cfg.activation) {
    case moe::Activation::SwiGLU: {
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

  // The accumulator of a warp: 16 rows (warp * 16 of the CTA tile); for n8
  // block j, element 4j + 2h + e sits at row lane / 4 + 8h, column
  // 8j + 2 (lane % 4) + e.
  void emitEpilogue(const CtaTile &tile, ArrayRef<Value> acc) {
    Value rowInWarp = divu(lane, idx(4));
    Value columnInPair = mul(remu(lane, idx(4)), idx(2));
    const bool dActivation = cfg.epilogue == moe::Epilogue::DActivation;
    for (int64_t h = 0; h < 2; ++h) {
      Value row = add(add(mul(warp, idx(16)), idx(h * 8)), rowInWarp);
      Value outRow = add(tile.rowBegin, row);
      Value rowValid = lt(outRow, tile.rowEnd);
      Value rowScale;
      if (cfg.epilogue == moe::Epilogue::ScaleRows || dActivation)
        rowScale = guarded(rowValid, b.getF32Type(),
                           [&] { return load(args.scale, outRow); },
                           f32(0.0));
      Value rowBase = mul(outRow, idx(cfg.cColumns));
      Value partialDs = f32(0.0);
      const int64_t step = cfg.pairsGateUpChunks() ? 2 : 1;
      for (int64_t j = 0; j < cfg.n8Blocks(); j += step) {
        Value column = add(idx(j * 8), columnInPair);
        Value v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
        if (cfg.pairsGateUpChunks()) {
          Value u0 = acc[4 * (j + 1) + 2 * h];
          Value u1 = acc[4 * (j + 1) + 2 * h + 1];
          Value gate = gateColumn(tile, column);
          when(land(rowValid, lt(gate, idx(cfg.n / 2))), [&] {
            storePair(args.c, add(rowBase, gate), v0, v1);
            storePair(args.c, add(rowBase, add(gate, idx(cfg.n / 2))), u0, u1);
            storePair(args.auxOut, add(mul(outRow, idx(cfg.auxColumns)), gate),
                      activation(v0, u0), activation(v1, u1));
          });
          continue;
        }
        Value global = add(mul(tile.nTile, idx(cfg.tileN)), column);
        Value valid = land(rowValid, lt(global, idx(cfg.n)));
        if (dActivation) {
          partialDs = fadd(partialDs, emitDActivation(valid, outRow, global,
                                                      rowScale, v0, v1));
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

  // dA = (v0, v1) at activation columns j, j+1: writes dH = dact(H, s dA) and
  // returns this thread's part of dS[row] = sum_j dA[row, j] act(H)[row, j].
  Value emitDActivation(Value valid, Value outRow, Value column,
                        Value rowScale, Value v0, Value v1) {
    return guarded(
        valid, b.getF32Type(),
        [&] {
          Value rowBase = mul(outRow, idx(cfg.cColumns));
          const bool gated = isGated(cfg.activation);
          const bool interleaved =
              cfg.gateUp == moe::GateUpLayout::Interleaved;
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

  // The four lanes of a quad share a row: reduce over them, then one atomic
  // add per row and warp.
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
  const HopperConfig &cfg;
  KernelParams args;
  Value threadId, lane, warp, warpgroup;
  Value shared;        // memref<elements x T, 3>, 1024-byte aligned
  Value sharedAddress; // its shared-window address (i64)
  int64_t bBaseBytes = 0;
};

LogicalResult lowerHopperGroupedGemm(moe::GroupedGemmOp op,
                                     gpu::GPUModuleOp kernels) {
  if (op.getVarlen() != moe::Varlen::M || !op.getAKContiguous())
    return op.emitOpError("the hopper path covers varlen-M GEMMs with a "
                          "K-contiguous A; use path = portable");
  const HopperConfig cfg(op);
  const bool tileFits =
      (cfg.tileM == kWgmmaM || cfg.tileM == 2 * kWgmmaM) &&
      cfg.tileK == cfg.rowElements() && cfg.tileN % kBlockColumns == 0 &&
      cfg.tileN <= 256 && cfg.stages >= 3;
  if (!tileFits)
    return op.emitOpError("the hopper path needs tile.m of 64 or 128, a "
                          "128-byte tile.k, tile.n a multiple of 64 up to "
                          "256 and at least 3 stages");
  KernelParams params = createKernel(op, kernels, cfg.threads);
  auto func = cast<gpu::GPUFuncOp>(params.a.getParentBlock()->getParentOp());
  ImplicitLocOpBuilder builder(op.getLoc(), op.getContext());
  builder.setInsertionPointToStart(&func.getBody().front());
  HopperKernelEmitter(builder, cfg, params).emit();
  gpu::ReturnOp::create(builder);
  return success();
}

struct MoeLowerGroupedGemmHopperPass
    : impl::MoeLowerGroupedGemmHopperBase<MoeLowerGroupedGemmHopperPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<moe::GroupedGemmOp> ops;
    module.walk([&](moe::GroupedGemmOp op) {
      if (op.getPath() == moe::KernelPath::Hopper)
        ops.push_back(op);
    });
    if (ops.empty())
      return;
    gpu::GPUModuleOp kernels = getOrCreateKernelModule(module);
    for (moe::GroupedGemmOp op : ops) {
      if (failed(lowerHopperGroupedGemm(op, kernels)))
        return signalPassFailure();
      op.erase();
    }
  }
};

} // namespace
} // namespace moejit

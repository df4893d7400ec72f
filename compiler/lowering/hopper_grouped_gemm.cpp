// moe-lower-grouped-gemm-hopper: the sm_90a code path of moe.grouped_gemm
// (ops with path = hopper; the others are left to moe-lower-grouped-gemm).
//
// A warp-specialised, persistent kernel for varlen-M GEMMs. The grid has at
// most one CTA per SM; each CTA walks a static list of (expert, M tile,
// N tile) work items. Warpgroup 0 is the producer: its 128 threads fill a
// `stages`-deep ring of shared-memory stages with 16-byte cp.async copies
// (gathered A rows driven by the row indices, B from the expert's weights)
// straight into the 128B-swizzle layout that wgmma's matrix descriptors
// describe: every stage row is 128 bytes (64 bf16/fp16 of K for A and
// K-contiguous B; 64 columns of N for N-contiguous B), and 16-byte chunk c
// of row r lands in chunk c ^ (r % 8). A stage is handed over through two
// mbarriers: "full" completes when every producer thread's copies landed
// (cp.async.mbarrier.arrive.noinc), "empty" when every consumer warp
// retired the wgmmas that read it. Warpgroups 1.. are consumers, one per 64
// rows of the tile: wgmma.mma_async m64nNk16 (N = tile.n) with fp32
// accumulators, one group in flight. The epilogue goes from the
// accumulator registers to global memory, every store predicated on the
// bounds, while the producer already fills the stages of the CTA's next
// tile; the wgmma accumulator fragment of a warp is the mma.sync m16n8 one
// repeated over N, so the epilogue is the one the portable path emits too,
// except that plain, scaled and forward-activation stores leave as one
// 8-byte store per lane for each pair of n8 blocks after a shuffle within
// the quad (wideStores), so every store fills whole 32-byte sectors.
//
// B goes by TMA where its tile is whole boxes (weightTileIsBoxes), and A
// where its rows are not gathered (one box of tile.m rows of the activation
// map per stage; the down-projection and dx). The TMA thread announces the
// stage's TMA bytes on the full barrier (arrive.expect_tx); where nothing
// goes by cp.async, it is the only producer thread, the full barrier waits
// for its arrive alone and the consumers need no proxy fence. With
// cluster_m = 2 or 4 the CTAs of a cluster take neighbouring M tiles of one
// expert and the same N tile: each loads its part of the B tile and
// multicasts it into every CTA's stage, and each consumer warp hands a
// stage back on the empty barriers of all CTAs of the cluster, so B's L2
// traffic is divided by the cluster size.
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

namespace moejit {

#define GEN_PASS_DEF_MOELOWERGROUPEDGEMMHOPPER
#include "compiler/lowering/passes.h.inc"

using namespace mlir;
using namespace moejit::lowering;

namespace {

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

// The op's attributes plus the warpgroup tiling.
struct HopperConfig : GroupedGemmAttrs {
  explicit HopperConfig(moe::GroupedGemmOp op) : GroupedGemmAttrs(op) {
    const TileShape tile{static_cast<int>(tileM), static_cast<int>(tileN), static_cast<int>(tileK)};
    layout = hopperTileLayout(tile);
    Schedule schedule;
    schedule.tile = tile;
    pingPong = op.getPingPong();
    staggered = op.getStaggeredEpilogues();
    // A consumer warpgroup owns all tile.n columns: gate and up halves.
    gateUpHalves = true;
    if (pingPong)
      schedule.warpgroups = WarpgroupMode::PingPong;
    threads = hopperThreads(schedule);
    cluster = op.getClusterM();
    bandsAlongM = op.getRasterAlongM();
    tmaStores = op.getTmaStores();
  }

  int64_t rowElements() const { return kRowBytes / elementBytes(); }
  int64_t chunkElements() const { return kChunkBytes / elementBytes(); }
  int64_t accumulators() const { return tileN / 2; } // per thread
  int64_t n8Blocks() const { return tileN / 8; }

  // Consumer warpgroups: one per 64 rows of the tile (cooperative), or two
  // that take turns on whole tiles (ping-pong).
  int64_t consumers() const { return pingPong ? 2 : tileM / kWgmmaM; }
  // The 64-row wgmma blocks one consumer warpgroup covers: all of a
  // ping-pong tile (2 for 128 rows: two m64 wgmmas per k16 step, and
  // tile.n <= 128 so the accumulators still fit), one otherwise.
  int64_t rowBlocks() const { return pingPong ? tileM / kWgmmaM : 1; }
  // Consumer warps that read each stage (and arrive on its empty barrier).
  int64_t stageReaders() const { return (pingPong ? 1 : consumers()) * 4; }

  // B by TMA (one elected producer thread), except for gate/up halves that
  // are not whole 64-column boxes of an N-contiguous B (usesWeightTma says
  // the same).
  bool tmaB() const { return weightTileIsBoxes(halvesGateUp(), bKContiguous, tileN); }
  // A by TMA (one box of tile.m rows per stage) unless its rows are
  // gathered: those go by cp.async, 16 bytes per thread and copy
  // (usesActivationTma says the same).
  bool tmaA() const { return !gatherA; }
  // Whether the producers copy anything by cp.async (each then arrives on
  // the full barrier, and the consumers fence the generic proxy's writes).
  bool cpAsync() const { return !tmaA() || !tmaB(); }

  bool pingPong = false;
  // The two cooperative consumers of a 128-row tile take turns on the
  // epilogue (consumer 0 first), so that one runs the next tile's main loop
  // while the other stores (the verifier allows it only there).
  bool staggered = false;
  int64_t threads = 0;
  // CTAs per cluster (along M): each loads 1 / cluster of the B tile and
  // multicasts it to all of them (hopperClusterSize).
  int64_t cluster = 1;
  // raster = along_m: the work items go in bands of M tiles (forEachTile).
  bool bandsAlongM = false;
  // Full tiles leave through shared staging and TMA stores
  // (hopperTmaStores; emitTmaEpilogue).
  bool tmaStores = false;
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
  Value kInTile; // row (B N-contiguous) or column (A, B K-contiguous) in K
  Value inRange; // null when every thread's chunk exists
};

class HopperKernelEmitter : GroupedGemmEmitter {
public:
  HopperKernelEmitter(ImplicitLocOpBuilder &builder, const HopperConfig &config,
                      const KernelParams &params)
      : GroupedGemmEmitter(builder, config, params), cfg(config) {
    wideStores = true;
  }

  // Warpgroup 0 produces (copies), warpgroups 1.. consume (wgmma and
  // epilogue); the two sides meet only at the stage barriers.
  void emit() {
    threadId = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    lane = remu(threadId, idx(kWarpSize));
    warp = divu(threadId, idx(kWarpSize));
    warpgroup = divu(threadId, idx(kWarpgroupThreads));
    clusterRank = cfg.cluster > 1
                      ? remu(gpu::BlockIdOp::create(b, gpu::Dimension::x), idx(cfg.cluster))
                      : idx(0);
    createSharedStages();
    copyOffsets();
    initBarriers();
    Value producer = eq(warpgroup, idx(0));
    auto roles = scf::IfOp::create(b, producer, /*withElseRegion=*/true);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(&roles.getThenRegion().front());
      if (cfg.consumers() == 2)
        setRegisters(kProducerRegisters, NVVM::SetMaxRegisterAction::decrease);
      emitProducer();
      b.setInsertionPointToStart(&roles.getElseRegion().front());
      if (cfg.consumers() == 2)
        setRegisters(kConsumerRegisters, NVVM::SetMaxRegisterAction::increase);
      emitConsumer();
    }
    // The other CTAs of the cluster still arrive on this CTA's empty
    // barriers until their last tile: none leaves before all are done.
    if (cfg.cluster > 1)
      clusterSync();
  }

private:
  // The producer's copies need few registers, the consumers' accumulators
  // many: the producer gives registers back to the CTA's pool and the
  // consumers take them (setmaxnreg), within the launch's 65536 / threads.
  void setRegisters(int64_t count, NVVM::SetMaxRegisterAction action) {
    NVVM::SetMaxRegisterOp::create(b, static_cast<uint32_t>(count), action);
  }

  // All threads of the cluster meet (barrier.cluster arrive + wait, release
  // and acquire at cluster scope).
  void clusterSync() {
    NVVM::ClusterArriveOp::create(b, UnitAttr());
    NVVM::ClusterWaitOp::create(b, UnitAttr());
  }

  Value eq(Value x, Value y) { return arith::CmpIOp::create(b, arith::CmpIPredicate::eq, x, y); }
  Value toI32(Value index) { return arith::IndexCastUIOp::create(b, b.getI32Type(), index); }

  // --- shared memory ------------------------------------------------------
  // One flat array of elements: the A stages, then the B stages, then (with
  // TMA stores) two staging buffers per consumer warpgroup, then the stage
  // barriers (full, then empty; 8 bytes each), then a copy of the expert
  // offsets. The swizzle pattern is a function of the address bits,
  // so the base is aligned to a swizzle atom at run time (the launch asks
  // for the slack).
  void createSharedStages() {
    Value raw = dynamicSharedBytes();
    Value rawAddress = memref::ExtractAlignedPointerAsIndexOp::create(b, raw);
    constexpr int64_t align = HopperTileLayout::kAlignBytes;
    Value shift = remu(sub(idx(align), remu(rawAddress, idx(align))), idx(align));
    const int64_t stageBytes = cfg.stages * (cfg.layout.aStageBytes + cfg.layout.bStageBytes);
    auto type = workgroupMemRef({stageBytes / cfg.elementBytes()}, cfg.element);
    shared = memref::ViewOp::create(b, type, raw, shift, ValueRange{});
    sharedAddress = toI64(add(rawAddress, shift));
    bBaseBytes = cfg.stages * cfg.layout.aStageBytes;
    // Stage sizes are multiples of 1024 bytes: the staging buffers start on
    // a swizzle atom, as the TMA stores' 128B swizzle needs.
    stagingBaseBytes = stageBytes;
    const int64_t stagingBytes =
        cfg.tmaStores ? cfg.consumers() * kStagingBuffers * kStagingBufferBytes : 0;
    fullBarrierBytes = stageBytes + stagingBytes;
    emptyBarrierBytes = fullBarrierBytes + cfg.stages * kBarrierBytes;
    turnBarrierBytes = fullBarrierBytes + 2 * cfg.stages * kBarrierBytes;
    offsetsBytes = turnBarrierBytes + 2 * kBarrierBytes;
  }

  // Both roles walk the expert offsets (E + 1 int32) on every tile; the CTA
  // copies them to shared memory once, before its first barrier, so that no
  // walk waits for a global load.
  Value offsetPointer(Value index) {
    return sharedPointer(add(idx(offsetsBytes), mul(index, idx(4))));
  }
  void copyOffsets() {
    forEachThreadItem(threadId, cfg.threads, cfg.experts + 1, [&](Value item, Value inRange) {
      whenSet(inRange,
              [&] { LLVM::StoreOp::create(b, load(args.offsets, item), offsetPointer(item)); });
    });
  }
  Value offsetAt(Value index) {
    return toIndex(LLVM::LoadOp::create(b, b.getI32Type(), offsetPointer(index)));
  }

  Value barrier(int64_t regionBytes, Value stage) {
    return sharedPointer(add(idx(regionBytes), mul(stage, idx(kBarrierBytes))));
  }
  Value fullBarrier(Value stage) { return barrier(fullBarrierBytes, stage); }
  Value emptyBarrier(Value stage) { return barrier(emptyBarrierBytes, stage); }
  Value turnBarrier(Value consumer) { return barrier(turnBarrierBytes, consumer); }

  // A stage is full when every producer thread's copies into it have
  // landed (one cp.async.mbarrier.arrive.noinc each) and empty when every
  // consumer warp has retired the wgmmas that read it (one arrive each).
  void initBarriers() {
    when(eq(threadId, idx(0)), [&] {
      // The TMA thread's expect_tx, plus the producers' cp.async arrivals.
      Value producers = arith::ConstantOp::create(
          b, b.getI32IntegerAttr(((cfg.tmaA() || cfg.tmaB()) ? 1 : 0) +
                                 (cfg.cpAsync() ? kWarpgroupThreads : 0)));
      // Every consumer warp of the cluster arrives: each CTA's producer
      // writes the stage of all of them.
      Value consumerWarps =
          arith::ConstantOp::create(b, b.getI32IntegerAttr(cfg.stageReaders() * cfg.cluster));
      for (int64_t s = 0; s < cfg.stages; ++s) {
        NVVM::MBarrierInitOp::create(b, fullBarrier(idx(s)), producers, Value());
        NVVM::MBarrierInitOp::create(b, emptyBarrier(idx(s)), consumerWarps, Value());
      }
      if (cfg.pingPong || cfg.staggered) {
        Value warps = arith::ConstantOp::create(b, b.getI32IntegerAttr(kWarpsPerGroup));
        for (int64_t g = 0; g < 2; ++g)
          NVVM::MBarrierInitOp::create(b, turnBarrier(idx(g)), warps, Value());
      }
      if (cfg.cluster > 1) // visible to the other CTAs' TMA and arrives
        NVVM::FenceMbarrierInitOp::create(b);
    });
    if (cfg.cluster > 1)
      clusterSync();
    else
      gpu::BarrierOp::create(b);
  }

  // Blocks until the phase of parity `parity` (0/1) of `bar` completed.
  void wait(Value bar, Value parity) {
    Value ticks = arith::ConstantOp::create(b, b.getI32IntegerAttr(kWaitTicks));
    NVVM::MBarrierTryWaitParityOp::create(b, bar, toI32(parity), ticks);
  }

  // --- CTA -> work ----------------------------------------------------------
  // A static persistent schedule: work item w = slot * nTiles + nTile (N
  // tiles fastest, so the CTAs sharing a gathered A tile run together and
  // read it from L2); the slots list all experts' M tiles in expert order.
  // With many N tiles the items go in bands of kBandSlots slots instead
  // (M fastest inside a band), so that the B tiles in flight stay in L2 too.
  // CTA c takes items c, c + grid, ... Both roles walk the same list, each
  // keeping the expert walk and the count of K tiles before the current
  // tile (which fixes the stage and phase of each K tile) as loop state.
  void forEachTile(function_ref<void(const CtaTile &, Value kBefore, Value ordinal)> body) {
    const int64_t nTiles = (cfg.n + cfg.tileN - 1) / cfg.tileN;
    const int64_t kTiles = (cfg.k + cfg.tileK - 1) / cfg.tileK;
    Value experts = idx(cfg.experts);
    // A cluster walks the list as one: item i of cluster c is the M tile of
    // cluster.m * tile.m rows, of which CTA rank r takes the r-th tile.m.
    Value grid = gpu::GridDimOp::create(b, gpu::Dimension::x);
    Value first = gpu::BlockIdOp::create(b, gpu::Dimension::x);
    if (cfg.cluster > 1) {
      grid = divu(grid, idx(cfg.cluster));
      first = divu(first, idx(cfg.cluster));
    }
    // raster = along_m (the default for many N tiles, where the whole B of
    // an expert does not stay in L2 while the CTAs in flight walk N for one
    // M tile): bands of kBandSlots M slots, M fastest inside a band, so the
    // CTAs in flight share ~G A tiles and ~grid / G B tiles. Never with
    // ping-pong, whose turns count every item (the verifier says so).
    const bool banded = cfg.bandsAlongM;
    auto walkSlot = [&](Value item) {
      return mul(divu(item, idx(kBandSlots * nTiles)), idx(kBandSlots));
    };
    Type indexType = b.getIndexType();
    SmallVector<Type> state(4, indexType); // item, expert, slotsBefore, kBefore
    SmallVector<Location> locs(4, b.getLoc());
    auto loop = scf::WhileOp::create(b, state, ValueRange{first, idx(0), idx(0), idx(0)});
    {
      OpBuilder::InsertionGuard guard(b);
      Block *before = b.createBlock(&loop.getBefore(), {}, state, locs);
      Value item = before->getArgument(0);
      // Banded: the walk state is the band's first slot, which only grows.
      auto [expert, slotsBefore] = walkExperts(banded ? walkSlot(item) : divu(item, idx(nTiles)),
                                               before->getArgument(1), before->getArgument(2));
      scf::ConditionOp::create(b, lt(expert, experts),
                               ValueRange{item, expert, slotsBefore, before->getArgument(3)});

      Block *after = b.createBlock(&loop.getAfter(), {}, state, locs);
      item = after->getArgument(0);
      expert = after->getArgument(1);
      slotsBefore = after->getArgument(2);
      Value kBefore = after->getArgument(3);
      auto emitTile = [&](Value tileExpert, Value tileSlotsBefore, Value slot, Value nTile) {
        CtaTile tile;
        tile.expert = tileExpert;
        Value localTile = sub(slot, tileSlotsBefore);
        Value rowInExpert =
            add(mul(localTile, idx(cfg.tileM * cfg.cluster)), mul(clusterRank, idx(cfg.tileM)));
        tile.rowBegin = add(offsetAt(tileExpert), rowInExpert);
        tile.rowEnd = offsetAt(add(tileExpert, idx(1)));
        tile.nTile = nTile;
        tile.kTiles = idx(kTiles);
        body(tile, kBefore, divu(sub(item, first), grid));
      };
      Value nextKBefore = add(kBefore, idx(kTiles));
      if (!banded) {
        emitTile(expert, slotsBefore, divu(item, idx(nTiles)), remu(item, idx(nTiles)));
      } else {
        // Item i of band b: slot b * G + i % G, N tile i / G. Slots past the
        // last one (a short last band) are skipped, consuming no K tiles.
        Value local = remu(item, idx(kBandSlots * nTiles));
        Value slot = add(walkSlot(item), remu(local, idx(kBandSlots)));
        auto [tileExpert, tileSlotsBefore] = walkExperts(slot, expert, slotsBefore);
        Value exists = lt(tileExpert, experts);
        when(exists,
             [&] { emitTile(tileExpert, tileSlotsBefore, slot, divu(local, idx(kBandSlots))); });
        nextKBefore = select(exists, nextKBefore, kBefore);
      }
      scf::YieldOp::create(b, ValueRange{add(item, grid), expert, slotsBefore, nextKBefore});
    }
  }

  // From (expert, slotsBefore), moves to the expert that owns M slot
  // `slot` (slots only grow along a CTA's list); expert == E past the end.
  std::pair<Value, Value> walkExperts(Value slot, Value expert, Value slotsBefore) {
    Value experts = idx(cfg.experts);
    Type indexType = b.getIndexType();
    auto walk = scf::WhileOp::create(b, TypeRange{indexType, indexType, indexType},
                                     ValueRange{expert, slotsBefore});
    OpBuilder::InsertionGuard guard(b);
    Block *before =
        b.createBlock(&walk.getBefore(), {}, {indexType, indexType}, {b.getLoc(), b.getLoc()});
    Value current = before->getArgument(0), passed = before->getArgument(1);
    Value inRange = lt(current, experts);
    Value tiles = guarded(
        inRange, indexType,
        [&] {
          Value begin = offsetAt(current);
          Value end = offsetAt(add(current, idx(1)));
          return ceilDiv(sub(end, begin), cfg.tileM * cfg.cluster);
        },
        idx(0));
    Value notHere = land(
        inRange, arith::CmpIOp::create(b, arith::CmpIPredicate::sge, slot, add(passed, tiles)));
    scf::ConditionOp::create(b, notHere, ValueRange{current, passed, tiles});
    Block *after = b.createBlock(&walk.getAfter(), {}, {indexType, indexType, indexType},
                                 {b.getLoc(), b.getLoc(), b.getLoc()});
    scf::YieldOp::create(b, ValueRange{add(after->getArgument(0), idx(1)),
                                       add(after->getArgument(1), after->getArgument(2))});
    b.setInsertionPointAfter(walk);
    return {walk.getResult(0), walk.getResult(1)};
  }

  // --- copies -------------------------------------------------------------
  // Element offset of 16-byte chunk `chunk` of 128-byte row `row` inside a
  // region whose rows are consecutive: the chunk index is XORed with the row
  // inside its swizzle atom.
  Value swizzledOffset(Value row, Value chunk) {
    Value physical = xori(chunk, remu(row, idx(kSwizzleRows)));
    return add(mul(row, idx(cfg.rowElements())), mul(physical, idx(cfg.chunkElements())));
  }

  // Chunks of a `rows` x 128-byte region: producer thread t takes t,
  // t + 128, ...
  SmallVector<Chunk> planChunks(int64_t total, function_ref<Chunk(Value linear)> planOne) {
    SmallVector<Chunk> chunks;
    forEachThreadItem(threadId, kWarpgroupThreads, total, [&](Value linear, Value inRange) {
      Chunk chunk = planOne(linear);
      chunk.inRange = inRange;
      chunks.push_back(chunk);
    });
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
      Value stored = storedRow(grouped, chunk.fixedValid, cfg.gatherA);
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
        auto [global, valid] = mapBColumn(tile.nTile, row);
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
      chunk.sharedOffset = swizzledOffset(blockRow, remu(nChunk, idx(kChunksPerRow)));
      auto [global, valid] = mapBColumn(tile.nTile, mul(nChunk, idx(cfg.chunkElements())));
      chunk.fixedOffset = add(expertBase, global);
      chunk.fixedValid = valid;
      chunk.kInTile = kRow;
      return chunk;
    });
  }

  // Starts the copies of K tile `kTile` into stage `stage`; chunks outside
  // the matrix read nothing and zero-fill shared memory.
  void issueCopies(ArrayRef<Chunk> chunks, Value global, Value stageBase, Value kTile,
                   bool kIsRow) {
    for (const Chunk &chunk : chunks) {
      auto copy = [&] {
        Value kIndex = add(mul(kTile, idx(cfg.tileK)), chunk.kInTile);
        Value valid = land(chunk.fixedValid, lt(kIndex, idx(cfg.k)));
        Value moving = kIsRow ? mul(kIndex, idx(cfg.n)) : kIndex;
        Value offset = select(valid, add(chunk.fixedOffset, moving), idx(0));
        Value sourceElements = select(valid, idx(cfg.chunkElements()), idx(0));
        nvgpu::DeviceAsyncCopyOp::create(
            b, shared, ValueRange{add(stageBase, chunk.sharedOffset)}, global, ValueRange{offset},
            b.getIndexAttr(cfg.chunkElements()), sourceElements, b.getUnitAttr());
      };
      whenSet(chunk.inRange, copy);
    }
  }

  // --- producer -----------------------------------------------------------
  // K tile i of the CTA's list (counted over all its tiles) goes to stage
  // i % stages in round i / stages. Before round r > 0 the producer waits
  // for the consumers to empty the stage in round r - 1: the empty
  // barrier's phase r - 1, parity (r - 1) & 1; in round 0 it waits on
  // parity 1, which a fresh barrier reports as complete.
  void emitProducer() {
    const int64_t aStageElements = cfg.layout.aStageBytes / cfg.elementBytes();
    const int64_t bStageElements = cfg.layout.bStageBytes / cfg.elementBytes();
    Value tmaThread = eq(threadId, idx(0));
    // Without cp.async only the TMA thread walks the tiles. The others
    // would wait on the empty barriers without arriving anywhere, so one
    // could fall two phases behind a barrier and wait for a phase that
    // never comes (a hang seen at T = 4096, zipf routing).
    auto producerThreads = [&](function_ref<void()> body) {
      if (cfg.cpAsync())
        body();
      else
        when(tmaThread, body);
    };
    producerThreads([&] {
      forEachTile([&](const CtaTile &tile, Value kBefore, Value) {
        SmallVector<Chunk> chunksA;
        if (!cfg.tmaA())
          chunksA = planChunksA(tile);
        SmallVector<Chunk> chunksB;
        if (!cfg.tmaB())
          chunksB = planChunksB(tile);
        auto loop = scf::ForOp::create(b, idx(0), tile.kTiles, idx(1));
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(loop.getBody());
        Value kTile = loop.getInductionVar();
        Value step = add(kBefore, kTile);
        Value stage = remu(step, idx(cfg.stages));
        Value round = divu(step, idx(cfg.stages));
        wait(emptyBarrier(stage), xori(remu(round, idx(2)), idx(1)));
        // The TMA thread announces the bytes that arrive by TMA, then loads.
        const int64_t tmaBytes =
            (cfg.tmaA() ? cfg.layout.aStageBytes : 0) + (cfg.tmaB() ? cfg.layout.bStageBytes : 0);
        if (tmaBytes > 0)
          when(tmaThread, [&] {
            NVVM::MBarrierArriveExpectTxOp::create(
                b, Type(), fullBarrier(stage),
                arith::ConstantOp::create(b, b.getI32IntegerAttr(tmaBytes)),
                NVVM::MemScopeKind::CTA, /*relaxed=*/false, Value());
            if (cfg.tmaB())
              loadWeightsByTma(tile, kTile, stage);
            if (cfg.tmaA())
              loadActivationsByTma(kTile, stage, tile.rowBegin);
          });
        if (!cfg.tmaA())
          issueCopies(chunksA, args.a, mul(stage, idx(aStageElements)), kTile,
                      /*kIsRow=*/false);
        if (!cfg.tmaB())
          issueCopies(chunksB, args.b,
                      add(idx(bBaseBytes / cfg.elementBytes()), mul(stage, idx(bStageElements))),
                      kTile, /*kIsRow=*/!cfg.bKContiguous);
        if (cfg.cpAsync())
          NVVM::CpAsyncMBarrierArriveOp::create(b, fullBarrier(stage),
                                                /*noinc=*/true);
      });
    });
    // Copies still in flight finish before the thread exits.
    NVVM::CpAsyncWaitGroupOp::create(b, b.getI32IntegerAttr(0));
  }

  // The B tile of K tile `kTile` into `stage` by TMA: the thread announces
  // the stage's bytes on the full barrier (arrive.expect_tx), then loads
  // boxes of the weight tensor map (weightMapShape) that land in the same
  // 128B-swizzled layout the cp.async path writes: K-contiguous B, one box
  // of tile.n rows; N-contiguous B, one box of tile.k rows per 64 columns.
  // Out-of-range rows and columns arrive as zeros and count as bytes. In a
  // cluster, CTA rank r loads part r of the boxes (of tile.n / cluster rows,
  // or tile.n / 64 / cluster blocks) and multicasts them: each lands at the
  // same offset of every CTA's stage and completes bytes on every CTA's
  // full barrier, which therefore still expects the whole tile.
  void loadWeightsByTma(const CtaTile &tile, Value kTile, Value stage) {
    MLIRContext *ctx = b.getContext();
    Value full = fullBarrier(stage);
    Value stageBase =
        add(sharedAddress, toI64(add(idx(bBaseBytes), mul(stage, idx(cfg.layout.bStageBytes)))));
    Value multicast;
    if (cfg.cluster > 1)
      multicast = arith::ConstantOp::create(
          b, b.getI16IntegerAttr(static_cast<int16_t>((1 << cfg.cluster) - 1)));
    auto load = [&](Value offsetBytes, Value c0, Value c1) {
      Value cta = LLVM::IntToPtrOp::create(b, LLVM::LLVMPointerType::get(ctx, kSharedAddressSpace),
                                           add(stageBase, toI64(offsetBytes)));
      Value cluster = LLVM::AddrSpaceCastOp::create(
          b, LLVM::LLVMPointerType::get(ctx, kSharedClusterAddressSpace), cta);
      NVVM::CpAsyncBulkTensorGlobalToSharedClusterOp::create(
          b, cluster, args.weightMap, ValueRange{toI32(c0), toI32(c1), toI32(tile.expert)}, full,
          ValueRange{}, multicast, Value(), NVVM::TMALoadMode::TILE,
          /*isCTAOnly=*/false, NVVM::CTAGroupKindAttr(), Value());
    };
    Value kFirst = mul(kTile, idx(cfg.tileK));
    Value nFirst = mul(tile.nTile, idx(cfg.tileN));
    // Without a cluster the rank is the constant 0 and the CTA loads
    // every part (the arithmetic folds in LLVM).
    if (cfg.bKContiguous) {
      Value row = mul(clusterRank, idx(cfg.tileN / cfg.cluster));
      load(mul(row, idx(kRowBytes)), kFirst, add(nFirst, row));
      return;
    }
    const int64_t blocks = cfg.tileN / kBlockColumns;
    const int64_t half = blocks / 2;
    const int64_t ownBlocks = blocks / cfg.cluster;
    for (int64_t j = 0; j < ownBlocks; ++j) {
      Value block = add(mul(clusterRank, idx(ownBlocks)), idx(j));
      Value column = add(nFirst, mul(block, idx(kBlockColumns)));
      if (cfg.halvesGateUp()) { // gate blocks, then the same up blocks
        Value gate = add(mul(tile.nTile, idx(cfg.tileN / 2)),
                         mul(remu(block, idx(half)), idx(kBlockColumns)));
        column = select(lt(block, idx(half)), gate, add(gate, idx(cfg.n / 2)));
      }
      load(mul(block, idx(cfg.tileK * kRowBytes)), column, kFirst);
    }
  }

  // A's part of K tile `kTile` by TMA into `stage`: the box of the
  // activation map (activationMapShape), tile.m rows from grouped row
  // `row`, in the 128B-swizzle layout of the cp.async path. Rows past
  // total_rows arrive as zeros; rows past the expert's end are read but
  // their accumulator rows are never stored.
  void loadActivationsByTma(Value kTile, Value stage, Value row) {
    MLIRContext *ctx = b.getContext();
    Value destination = LLVM::IntToPtrOp::create(
        b, LLVM::LLVMPointerType::get(ctx, kSharedAddressSpace),
        add(sharedAddress, toI64(mul(stage, idx(cfg.layout.aStageBytes)))));
    Value cluster = LLVM::AddrSpaceCastOp::create(
        b, LLVM::LLVMPointerType::get(ctx, kSharedClusterAddressSpace), destination);
    NVVM::CpAsyncBulkTensorGlobalToSharedClusterOp::create(
        b, cluster, args.activationMap, ValueRange{toI32(mul(kTile, idx(cfg.tileK))), toI32(row)},
        fullBarrier(stage), ValueRange{}, Value(), Value(), NVVM::TMALoadMode::TILE,
        /*isCTAOnly=*/false, NVVM::CTAGroupKindAttr(), Value());
  }

  // --- wgmma --------------------------------------------------------------
  // A shared-memory matrix descriptor: start address, leading and stride
  // byte offsets (each encoded >> 4) and the 128B swizzle mode.
  static int64_t descriptorBits(int64_t leadingBytes, int64_t strideBytes) {
    constexpr int64_t kSwizzle128B = 1;
    return ((leadingBytes >> 4) << 16) | ((strideBytes >> 4) << 32) | (kSwizzle128B << 62);
  }
  Value descriptor(Value byteAddress, int64_t bits) {
    Value encoded =
        arith::ShRUIOp::create(b, arith::AndIOp::create(b, byteAddress, i64(0x3FFFF)), i64(4));
    return arith::OrIOp::create(b, encoded, i64(bits));
  }

  // `accumulate` false: D = A B, the accumulator's input is not read.
  Value wgmma(Value acc, Value descA, Value descB, bool accumulate = true) {
    auto typeOf = [&] {
      return cfg.element.isBF16() ? NVVM::WGMMATypes::bf16 : NVVM::WGMMATypes::f16;
    };
    MLIRContext *ctx = b.getContext();
    return NVVM::WgmmaMmaAsyncOp::create(
        b, acc.getType(), acc, descA, descB,
        NVVM::MMAShapeAttr::get(ctx, kWgmmaM, cfg.tileN, kWgmmaK),
        NVVM::WGMMATypesAttr::get(ctx, typeOf()), NVVM::WGMMATypesAttr::get(ctx, typeOf()),
        NVVM::WGMMATypesAttr::get(ctx, NVVM::WGMMATypes::f32),
        NVVM::WGMMAScaleOutAttr::get(ctx, accumulate ? NVVM::WGMMAScaleOut::one
                                                     : NVVM::WGMMAScaleOut::zero),
        NVVM::WGMMAScaleInAttr::get(ctx, NVVM::WGMMAScaleIn::one),
        NVVM::WGMMAScaleInAttr::get(ctx, NVVM::WGMMAScaleIn::one),
        NVVM::MMALayoutAttr::get(ctx, NVVM::MMALayout::row),
        // col: B K-major; row: B N-major (transposed).
        NVVM::MMALayoutAttr::get(ctx,
                                 cfg.bKContiguous ? NVVM::MMALayout::col : NVVM::MMALayout::row),
        NVVM::MMAIntOverflowAttr());
  }

  // The wgmmas of one stage for this consumer warpgroup's rows: per k16
  // step, one per 64-row block. For the tile's first stage (`first`) the
  // first k16 step overwrites the accumulators.
  SmallVector<Value> emitStageMma(Value stage, SmallVector<Value> acc, bool first) {
    Value aStage =
        add(sharedAddress,
            toI64(add(mul(stage, idx(cfg.layout.aStageBytes)),
                      cfg.pingPong ? idx(0) : mul(consumerGroup, idx(kWgmmaM * kRowBytes)))));
    const int64_t blockBytes = kWgmmaM * kRowBytes;
    Value bStage =
        add(sharedAddress, toI64(add(idx(bBaseBytes), mul(stage, idx(cfg.layout.bStageBytes)))));
    // K-major operands: rows of 128 bytes, 8-row atoms 1024 bytes apart, a
    // k16 step is 32 bytes into the row. N-major B: 64-column blocks
    // tile.k rows apart, 8-row atoms along K, a k16 step is 16 rows.
    const int64_t kMajorBits = descriptorBits(kChunkBytes, kSwizzleAtomBytes);
    const int64_t nMajorBits = descriptorBits(cfg.tileK * kRowBytes, kSwizzleAtomBytes);
    const int64_t kStepBytes = kWgmmaK * cfg.elementBytes();
    NVVM::WgmmaFenceAlignedOp::create(b);
    for (int64_t step = 0; step < cfg.tileK / kWgmmaK; ++step) {
      Value descB = cfg.bKContiguous
                        ? descriptor(add(bStage, i64(step * kStepBytes)), kMajorBits)
                        : descriptor(add(bStage, i64(step * kWgmmaK * kRowBytes)), nMajorBits);
      for (int64_t block = 0; block < cfg.rowBlocks(); ++block) {
        Value descA =
            descriptor(add(aStage, i64(block * blockBytes + step * kStepBytes)), kMajorBits);
        acc[block] = wgmma(acc[block], descA, descB, !(first && step == 0));
      }
    }
    NVVM::WgmmaGroupSyncAlignedOp::create(b);
    return acc;
  }

  // --- consumer -----------------------------------------------------------
  // Per K tile: wait until the stage is full (round parity), make the
  // copies (generic proxy) visible to wgmma (async proxy), issue the
  // stage's wgmmas and keep one group in flight; once the previous K
  // tile's group has retired, lane 0 of each warp hands its stage back.
  // The epilogue runs from registers while the producer already fills the
  // stages of the next tile; staggered consumers take turns on it.
  void emitConsumer() {
    consumerGroup = sub(warpgroup, idx(1));
    // The warp's 16-row slice of the tile.
    consumerWarp = cfg.pingPong ? remu(warp, idx(kWarpsPerGroup)) : sub(warp, idx(kWarpsPerGroup));
    Value leader = eq(lane, idx(0));
    groupLeader = eq(remu(threadId, idx(kWarpgroupThreads)), idx(0));
    forEachTile([&](const CtaTile &tile, Value kBefore, Value ordinal) {
      if (cfg.pingPong)
        when(eq(remu(ordinal, idx(2)), consumerGroup),
             [&] { emitConsumerTile(tile, kBefore, leader, ordinal); });
      else
        emitConsumerTile(tile, kBefore, leader, ordinal);
    });
    // The last TMA stores complete before the CTA (and its staging) ends.
    if (cfg.tmaStores)
      when(groupLeader, [&] { NVVM::CpAsyncBulkWaitGroupOp::create(b, 0, UnitAttr()); });
  }

  // Ping-pong: consumer g's main loops alternate with the other's. The
  // stage barriers tell only the parity of a round, so a consumer may wait
  // for a stage only while the stage is at most one round behind: consumer
  // 0 starts its j-th tile once consumer 1 finished the main loop of its
  // (j-1)-th (turn barrier 0, phase j - 1; parity 1 passes at j = 0),
  // consumer 1 its j-th once consumer 0 finished its j-th (turn barrier
  // 1, phase j). Each arrives on the other's turn barrier after its main
  // loop, one arrive per warp.
  // Cooperative consumers with ordered epilogues use the same two barriers
  // for their epilogues: consumer g's j-th tile is the CTA's j-th.
  void waitForTurn(Value turn) {
    Value round = remu(turn, idx(2));
    Value parity = select(eq(consumerGroup, idx(0)), xori(round, idx(1)), round);
    wait(turnBarrier(consumerGroup), parity);
  }
  void passTurn(Value leader) {
    when(leader, [&] {
      NVVM::MBarrierArriveOp::create(b, Type(), turnBarrier(sub(idx(1), consumerGroup)), Value());
    });
  }

  void emitConsumerTile(const CtaTile &tile, Value kBefore, Value leader, Value ordinal) {
    if (cfg.pingPong)
      waitForTurn(divu(ordinal, idx(2)));
    // The accumulators start undefined: the first K tile's first wgmma
    // overwrites them. Zeroing them with moves instead puts register writes
    // between the wgmma fence and the first wgmma; ptxas then injects a
    // warpgroup.arrive, and in the ping-pong consumers' divergent branch it
    // serialises every wgmma (C7520; 128x128 ping-pong ran at 365 TFLOP/s).
    SmallVector<Type> fields(cfg.accumulators(), b.getF32Type());
    auto accType = LLVM::LLVMStructType::getLiteral(b.getContext(), fields);
    SmallVector<Value> accs(cfg.rowBlocks(), LLVM::UndefOp::create(b, accType));

    // In a cluster, on the empty barrier of every CTA (their producers
    // multicast into this CTA's stage too).
    auto release = [&](Value step) {
      when(leader, [&] {
        Value empty = emptyBarrier(remu(step, idx(cfg.stages)));
        if (cfg.cluster == 1) {
          NVVM::MBarrierArriveOp::create(b, Type(), empty, Value());
          return;
        }
        auto remoteType = LLVM::LLVMPointerType::get(b.getContext(), kSharedClusterAddressSpace);
        for (int64_t rank = 0; rank < cfg.cluster; ++rank) {
          Value remote = NVVM::MapaOp::create(
              b, remoteType, empty, arith::ConstantOp::create(b, b.getI32IntegerAttr(rank)));
          // Release at CTA scope, like a local arrive: the wgmmas that
          // read the stage have retired and nothing is published; a
          // cluster-scope release would first wait for this thread's
          // outstanding global stores (the last tile's epilogue).
          NVVM::MBarrierArriveOp::create(b, Type(), remote, Value());
        }
      });
    };
    // One K tile: wait for its stage, issue its wgmmas, keep one group in
    // flight and hand back the previous K tile's stage.
    auto kTileMma = [&](Value kTile, SmallVector<Value> in, bool first) {
      Value step = add(kBefore, kTile);
      Value stage = remu(step, idx(cfg.stages));
      wait(fullBarrier(stage), remu(divu(step, idx(cfg.stages)), idx(2)));
      // cp.async writes (gathered A; B where it does not go by TMA) are
      // generic-proxy writes that wgmma's async-proxy reads must be fenced
      // against; TMA writes are async-proxy already.
      if (cfg.cpAsync())
        NVVM::FenceProxyOp::create(
            b, NVVM::ProxyKindAttr::get(b.getContext(), NVVM::ProxyKind::async_shared),
            NVVM::SharedSpaceAttr::get(b.getContext(), NVVM::SharedSpace::shared_cta));
      SmallVector<Value> out = emitStageMma(stage, std::move(in), first);
      NVVM::WgmmaWaitGroupSyncOp::create(b, 1);
      if (!first)
        release(sub(step, idx(1)));
      return out;
    };
    // K tile 0 (every tile has at least one: K > 0), then the rest.
    accs = kTileMma(idx(0), accs, /*first=*/true);
    auto loop = scf::ForOp::create(b, idx(1), tile.kTiles, idx(1), accs);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      scf::YieldOp::create(b,
                           kTileMma(loop.getInductionVar(),
                                    SmallVector<Value>(loop.getRegionIterArgs()), /*first=*/false));
    }
    if (cfg.pingPong)
      passTurn(leader);
    NVVM::WgmmaWaitGroupSyncOp::create(b, 0);
    release(add(kBefore, sub(tile.kTiles, idx(1))));
    if (cfg.staggered)
      waitForTurn(ordinal);
    for (int64_t block = 0; block < cfg.rowBlocks(); ++block) {
      SmallVector<Value> values;
      for (int64_t i = 0; i < cfg.accumulators(); ++i)
        values.push_back(
            LLVM::ExtractValueOp::create(b, loop.getResult(block), ArrayRef<int64_t>{i}));
      if (!cfg.tmaStores) {
        emitEpilogue(tile, block, values);
        continue;
      }
      emitTmaEpilogue(tile, values);
    }
    if (cfg.staggered)
      passTurn(leader);
  }

  // --- epilogue -----------------------------------------------------------
  // The accumulator of a consumer warp: 16 rows (its index among the
  // consumer warps * 16 of the CTA tile); for n8 block j, element
  // 4j + 2h + e sits at row lane / 4 + 8h, column 8j + 2 (lane % 4) + e.
  void emitEpilogue(const CtaTile &tile, int64_t block, ArrayRef<Value> acc) {
    Value rowInWarp = fragmentRow();
    Value columnInPair = fragmentColumn();
    for (int64_t h = 0; h < 2; ++h) {
      Value row = add(add(mul(consumerWarp, idx(16)), idx(block * kWgmmaM + h * 8)), rowInWarp);
      Value outRow = add(tile.rowBegin, row);
      Value rowValid = lt(outRow, tile.rowEnd);
      emitEpilogueRow(
          tile.nTile, outRow, rowValid, cfg.n8Blocks(),
          [&](int64_t j) { return add(idx(j * 8), columnInPair); },
          [&](int64_t j, int64_t e) { return acc[4 * j + 2 * h + e]; });
    }
  }

  // --- TMA-store epilogue ---------------------------------------------------
  // The warpgroup's 64 rows leave 64 columns at a time: every thread writes
  // its fragments of the box into a staging buffer with stmatrix (the m8n8
  // matrix fragment is the accumulator's, so no shuffles), in the 128B
  // swizzle of the output map; after a proxy fence and a warpgroup barrier
  // one thread stores the box by TMA (cp.async.bulk.tensor) and the
  // warpgroup goes on. Two buffers alternate: before the barrier of box i
  // the storing thread waits until the TMA unit has read box i - 1's
  // buffer, which box i + 1 writes next. Boxes that are skipped (H with
  // C = null, columns past N) are a prefix of a tile or a suffix of it, so
  // the wait at the tile's start covers them.
  // A box may go by TMA only when all 64 rows are the expert's: in the last
  // M tile of an expert the threads copy the box's rows that are out of
  // the buffer themselves, 16 bytes at a time (the next box's barrier
  // orders those reads before the buffer is written again). One staging
  // path for both keeps a single copy of the register-heavy part (a second,
  // direct epilogue in the same kernel made ptxas spill).
  void emitTmaEpilogue(const CtaTile &tile, ArrayRef<Value> acc) {
    // One 64-row block per consumer warpgroup: cooperative consumers only
    // (the verifier rejects tma_stores with ping_pong).
    assert(cfg.rowBlocks() == 1 && "TMA stores need cooperative consumers");
    Value groupRow = add(tile.rowBegin, mul(consumerGroup, idx(kWgmmaM)));
    Value whole = arith::CmpIOp::create(b, arith::CmpIPredicate::sle, add(groupRow, idx(kWgmmaM)),
                                        tile.rowEnd);
    Value warpInGroup = remu(consumerWarp, idx(kWarpsPerGroup));
    // stmatrix x4: lane L gives the address of row L % 8 of matrix L / 8;
    // matrices 2i and 2i + 1 are the two row halves of n8 block i of the
    // pair, so lane L writes box row 16 w + 8 ((L / 8) % 2) + L % 8, 16-byte
    // column 2q + L / 16 of pair q.
    Value matrix = divu(lane, idx(8));
    Value boxRow =
        add(add(mul(warpInGroup, idx(16)), mul(remu(matrix, idx(2)), idx(8))), remu(lane, idx(8)));
    Value pairColumn = divu(matrix, idx(2));
    Value rowSwizzle = remu(boxRow, idx(kSwizzleRows));
    Value groupStaging =
        add(idx(stagingBaseBytes), mul(consumerGroup, idx(kStagingBuffers * kStagingBufferBytes)));
    Value groupBarrier = toI32(add(consumerGroup, idx(kFirstGroupBarrier)));

    // Buffer 0 is free once the previous tile's last box has been read.
    when(groupLeader, [&] { NVVM::CpAsyncBulkWaitGroupOp::create(b, 0, b.getUnitAttr()); });
    groupSync(groupBarrier);

    int64_t boxes = 0;
    // One box: fragment value(j, h, e) of n8 block j (0..7) of the box, row
    // half h, element e, to columns [column, column + 64) of `map`.
    auto storeBox = [&](Value map, Value output, int64_t columns, Value column,
                        function_ref<Value(int64_t j, int64_t h, int64_t e)> value) {
      Value buffer = add(groupStaging, idx((boxes++ % kStagingBuffers) * kStagingBufferBytes));
      for (int64_t q = 0; q < kBlockColumns / 16; ++q) {
        SmallVector<Value> words;
        for (int64_t m = 0; m < 4; ++m)
          words.push_back(packPair(value(2 * q + m / 2, m % 2, 0), value(2 * q + m / 2, m % 2, 1)));
        Value chunk = xori(add(idx(2 * q), pairColumn), rowSwizzle);
        Value offset = add(buffer, add(mul(boxRow, idx(kRowBytes)), mul(chunk, idx(kChunkBytes))));
        // The intrinsic, not inline PTX: LLVM knows it as convergent and
        // never moves it into a branch that part of the warp takes.
        NVVM::StMatrixOp::create(b, sharedPointer(offset), words, NVVM::MMALayout::row,
                                 NVVM::LdStMatrixShapeAttr::get(b.getContext(), 8, 8),
                                 NVVM::LdStMatrixEltType::B16);
      }
      NVVM::FenceProxyOp::create(
          b, NVVM::ProxyKindAttr::get(b.getContext(), NVVM::ProxyKind::async_shared),
          NVVM::SharedSpaceAttr::get(b.getContext(), NVVM::SharedSpace::shared_cta));
      when(groupLeader, [&] { NVVM::CpAsyncBulkWaitGroupOp::create(b, 0, b.getUnitAttr()); });
      groupSync(groupBarrier);
      auto split = scf::IfOp::create(b, whole, /*withElseRegion=*/true);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(&split.getThenRegion().front());
      when(groupLeader, [&] {
        NVVM::CpAsyncBulkTensorSharedCTAToGlobalOp::create(
            b, map, sharedPointer(buffer), ValueRange{toI32(column), toI32(groupRow)}, Value(),
            NVVM::TMAStoreMode::TILE, Value());
        NVVM::CpAsyncBulkCommitGroupOp::create(b);
      });
      b.setInsertionPointToStart(&split.getElseRegion().front());
      copyBoxRows(tile, groupRow, buffer, output, columns, column);
    };

    const int64_t boxesPerTile = cfg.tileN / kBlockColumns;
    auto fragment = [&](int64_t block, int64_t h, int64_t e) { return acc[4 * block + 2 * h + e]; };
    if (cfg.epilogue == moe::Epilogue::ActForward) {
      // Gate blocks [0, half), up blocks [half, 2 half) of the tile; gate box
      // c is H's columns tile.n / 2 * nTile + 64 c, its up box the same plus
      // N / 2, its activation box the same columns of aux_out.
      const int64_t half = cfg.n8Blocks() / 2;
      Value cAddress = memref::ExtractAlignedPointerAsIndexOp::create(b, args.c);
      Value storesH = arith::CmpIOp::create(b, arith::CmpIPredicate::ne, cAddress, idx(0));
      Value gateFirst = mul(tile.nTile, idx(cfg.tileN / 2));
      when(storesH, [&] {
        for (int64_t box = 0; box < boxesPerTile / 2; ++box) {
          Value column = add(gateFirst, idx(box * kBlockColumns));
          storeBox(args.outputMap, args.c, cfg.cColumns, column,
                   [&](int64_t j, int64_t h, int64_t e) { return fragment(8 * box + j, h, e); });
          storeBox(
              args.outputMap, args.c, cfg.cColumns, add(column, idx(cfg.n / 2)),
              [&](int64_t j, int64_t h, int64_t e) { return fragment(half + 8 * box + j, h, e); });
        }
      });
      for (int64_t box = 0; box < boxesPerTile / 2; ++box)
        storeBox(args.auxMap, args.auxOut, cfg.auxColumns, add(gateFirst, idx(box * kBlockColumns)),
                 [&](int64_t j, int64_t h, int64_t e) {
                   return activation(fragment(8 * box + j, h, e),
                                     fragment(half + 8 * box + j, h, e));
                 });
      return;
    }
    // Plain or row-scaled stores: box c is C's columns tile.n * nTile + 64 c;
    // boxes past N (the last N tile of an N that is not a multiple of
    // tile.n) are skipped.
    Value scales[2];
    if (cfg.epilogue == moe::Epilogue::ScaleRows)
      for (int64_t h = 0; h < 2; ++h) {
        Value row =
            add(add(tile.rowBegin, mul(consumerWarp, idx(16))), add(idx(8 * h), fragmentRow()));
        scales[h] = loadRowScale(row, lt(row, tile.rowEnd));
      }
    Value first = mul(tile.nTile, idx(cfg.tileN));
    for (int64_t box = 0; box < boxesPerTile; ++box) {
      Value column = add(first, idx(box * kBlockColumns));
      auto store = [&] {
        storeBox(args.outputMap, args.c, cfg.cColumns, column,
                 [&](int64_t j, int64_t h, int64_t e) {
                   Value v = fragment(8 * box + j, h, e);
                   return scales[h] ? fmul(scales[h], v) : v;
                 });
      };
      if (cfg.n % cfg.tileN == 0)
        store();
      else
        when(lt(column, idx(cfg.n)), store);
    }
  }

  // The rows of the staged box `buffer` that are the expert's (below
  // rowEnd) and the columns inside the output (`columns` wide) go to
  // `output` from 16-byte chunks of the buffer: thread t of the warpgroup
  // takes chunks t, t + 128, ... (eight per 128-byte row, swizzled).
  void copyBoxRows(const CtaTile &tile, Value groupRow, Value buffer, Value output, int64_t columns,
                   Value column) {
    Value thread = remu(threadId, idx(kWarpgroupThreads));
    const int64_t chunks = kWgmmaM * kChunksPerRow;
    for (int64_t i = 0; i < chunks / kWarpgroupThreads; ++i) {
      Value linear = add(thread, idx(i * kWarpgroupThreads));
      Value row = divu(linear, idx(kChunksPerRow));
      Value chunk = remu(linear, idx(kChunksPerRow));
      Value outRow = add(groupRow, row);
      Value outColumn = add(column, mul(chunk, idx(cfg.chunkElements())));
      when(land(lt(outRow, tile.rowEnd), lt(outColumn, idx(columns))), [&] {
        Value offset =
            add(buffer, add(mul(row, idx(kRowBytes)),
                            mul(xori(chunk, remu(row, idx(kSwizzleRows))), idx(kChunkBytes))));
        auto wordsType = VectorType::get({4}, b.getI32Type());
        Value words = LLVM::LoadOp::create(b, wordsType, sharedPointer(offset), /*alignment=*/16);
        Value elements = vector::BitCastOp::create(
            b, VectorType::get({cfg.chunkElements()}, cfg.element), words);
        vector::StoreOp::create(b, elements, output,
                                ValueRange{add(mul(outRow, idx(columns)), outColumn)},
                                /*nontemporal=*/false, llvm::Align(16));
      });
    }
  }

  // bar.sync over the 128 threads of one consumer warpgroup (the convergent
  // barrier intrinsic: every thread of the warpgroup reaches it together).
  void groupSync(Value barrierId) {
    NVVM::BarrierOp::create(b, Type(), barrierId, constant(b.getI32IntegerAttr(kWarpgroupThreads)),
                            NVVM::BarrierReductionAttr(), Value());
  }

  // A pointer into the CTA's shared window at `offset` bytes from the
  // aligned base.
  Value sharedPointer(Value offset) {
    return LLVM::IntToPtrOp::create(b,
                                    LLVM::LLVMPointerType::get(b.getContext(), kSharedAddressSpace),
                                    add(sharedAddress, toI64(offset)));
  }
  static constexpr int64_t kWarpsPerGroup = kWarpgroupThreads / kWarpSize;
  // Staging of the TMA stores: two 64-row x 128-byte buffers per consumer
  // warpgroup (hopperStagingBytes); named barrier 0 is the CTA's, 1 + g
  // consumer warpgroup g's.
  static constexpr int64_t kStagingBuffers = HopperTileLayout::kStagingBuffers;
  static constexpr int64_t kStagingBufferBytes = HopperTileLayout::kStagingBufferBytes;
  static constexpr int64_t kFirstGroupBarrier = 1;
  // M slots per band of the banded tile order (raster = along_m, which the
  // default schedule picks from 64 N tiles on).
  static constexpr int64_t kBandSlots = 16;
  static constexpr int64_t kBarrierBytes = HopperTileLayout::kBarrierBytes;
  // With two consumer warpgroups the launch holds 384 x 168 registers; the
  // producer gives back 128 x 48 of them, the consumers take 256 x 24
  // (setmaxnreg.inc waits until the pool has them, so the two must match).
  // ptxas keeps the producer's copy addressing free of spills at 120 (not
  // at 88 for an N-contiguous B). With one consumer every thread may
  // already use 255.
  static constexpr int64_t kProducerRegisters = 120;
  static constexpr int64_t kConsumerRegisters = 192;
  static constexpr unsigned kSharedAddressSpace = 3;
  static constexpr unsigned kSharedClusterAddressSpace = 7;
  // The suspend-time hint of mbarrier.try_wait, in nanoseconds.
  static constexpr int32_t kWaitTicks = 0x989680;

  const HopperConfig &cfg;
  Value threadId, warp, warpgroup;
  Value clusterRank;                 // the constant 0 without a cluster
  Value consumerGroup, consumerWarp; // consumer side only
  Value shared;                      // memref<elements x T, 3>, 1024-byte aligned
  Value sharedAddress;               // its shared-window address (i64)
  int64_t bBaseBytes = 0, fullBarrierBytes = 0, emptyBarrierBytes = 0;
  int64_t turnBarrierBytes = 0, offsetsBytes = 0, stagingBaseBytes = 0;
  Value groupLeader; // consumer side: thread 0 of the consumer warpgroup
};

LogicalResult lowerHopperGroupedGemm(moe::GroupedGemmOp op, gpu::GPUModuleOp kernels) {
  if (op.getVarlen() != moe::Varlen::M || !op.getAKContiguous())
    return op.emitOpError("the hopper path covers varlen-M GEMMs with a "
                          "K-contiguous A; use path = portable");
  const HopperConfig cfg(op);
  const bool tileFits = (cfg.tileM == kWgmmaM || cfg.tileM == 2 * kWgmmaM) &&
                        cfg.tileK == cfg.rowElements() && cfg.tileN % kBlockColumns == 0 &&
                        cfg.tileN <= 256 && cfg.stages >= 3;
  if (!tileFits)
    return op.emitOpError("the hopper path needs tile.m of 64 or 128, a "
                          "128-byte tile.k, tile.n a multiple of 64 up to "
                          "256 and at least 3 stages");
  if (cfg.cluster > 1) {
    const bool splits = cfg.bKContiguous ? cfg.tileN % (cfg.cluster * kSwizzleRows) == 0
                                         : (cfg.tileN / kBlockColumns) % cfg.cluster == 0;
    if (!cfg.tmaB() || !splits)
      return op.emitOpError("cluster_m = ")
             << cfg.cluster << " needs B by TMA, split into " << cfg.cluster
             << " parts of whole boxes (hopperClusterSize); use cluster_m = 1";
  }
  buildKernel(
      op, kernels, cfg.threads,
      [&](ImplicitLocOpBuilder &builder, const KernelParams &params) {
        HopperKernelEmitter(builder, cfg, params).emit();
      },
      cfg.cluster);
  return success();
}

struct MoeLowerGroupedGemmHopperPass
    : impl::MoeLowerGroupedGemmHopperBase<MoeLowerGroupedGemmHopperPass> {
  void runOnOperation() override {
    if (failed(lowerGroupedGemmOps(
            getOperation(),
            [](moe::GroupedGemmOp op) { return op.getPath() == moe::KernelPath::Hopper; },
            lowerHopperGroupedGemm)))
      signalPassFailure();
  }
};

} // namespace
} // namespace moejit

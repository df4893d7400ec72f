#include "compiler/lowering/kernel_common.h"

#include "moejit/problem.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <tuple>

namespace moejit::lowering {

using namespace mlir;

bool isGated(moe::Activation activation) {
  return activation == moe::Activation::SwiGLU || activation == moe::Activation::GeGLU;
}

// --- the op -----------------------------------------------------------------

GroupedGemmAttrs::GroupedGemmAttrs(moe::GroupedGemmOp op)
    : varlenM(op.getVarlen() == moe::Varlen::M), element(op.getElementType()),
      experts(op.getExperts()), m(op.getM()), n(op.getN()), k(op.getK()),
      bKContiguous(op.getBKContiguous()), gatherA(op.getGatherA()), gatherB(op.getGatherB()),
      scaleBRows(op.getScaleBRows()), epilogue(op.getEpilogue()), activation(op.getActivation()),
      gateUp(op.getGateUp()), cColumns(op.getCColumns()), auxColumns(op.getAuxColumns()),
      tileM(op.getTile()[0]), tileN(op.getTile()[1]), tileK(op.getTile()[2]),
      stages(op.getStages()) {}

int64_t GroupedGemmAttrs::elementBytes() const { return element.getIntOrFloatBitWidth() / 8; }

bool GroupedGemmAttrs::splitsGateUp() const {
  return epilogue == moe::Epilogue::ActForward && isGated(activation) &&
         gateUp == moe::GateUpLayout::Concatenated;
}

// --- the kernel -------------------------------------------------------------

void buildKernel(moe::GroupedGemmOp op, gpu::GPUModuleOp kernels, int64_t threads,
                 KernelBodyEmitter emitBody, int64_t clusterSize) {
  MLIRContext *ctx = op.getContext();
  auto buffer = [](Type element) { return MemRefType::get({kUnboundedExtent}, element); };
  Type element = op.getElementType();
  Type auxOut =
      op.getEpilogue() == moe::Epilogue::DActivation ? Type(Float32Type::get(ctx)) : element;
  Type i32 = IntegerType::get(ctx, 32);
  SmallVector<Type> params = {buffer(element), buffer(element), buffer(element), buffer(element),
                              buffer(auxOut), buffer(i32), buffer(i32),
                              buffer(Float32Type::get(ctx)), i32,
                              // The tensor maps of B, A, C and aux_out;
                              // moe-extern-dynamic-shared-memory makes them
                              // by-value grid constants.
                              LLVM::LLVMPointerType::get(ctx), LLVM::LLVMPointerType::get(ctx),
                              LLVM::LLVMPointerType::get(ctx), LLVM::LLVMPointerType::get(ctx)};
  assert(params.size() == static_cast<size_t>(KernelArg::Count));
  OpBuilder moduleBuilder = OpBuilder::atBlockEnd(kernels.getBody());
  auto func = gpu::GPUFuncOp::create(moduleBuilder, op.getLoc(), op.getSymName(),
                                     FunctionType::get(ctx, params, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), UnitAttr::get(ctx));
  func.setKnownBlockSizeAttr(DenseI32ArrayAttr::get(ctx, {static_cast<int32_t>(threads), 1, 1}));
  // A compile-time cluster shape (.reqnctapercluster): a plain launch of a
  // grid that is a multiple of it forms the clusters.
  if (clusterSize > 1)
    func->setAttr(NVVM::NVVMDialect::getClusterDimAttrName(),
                  DenseI32ArrayAttr::get(ctx, {static_cast<int32_t>(clusterSize), 1, 1}));
  for (KernelArg map : kTensorMapArgs)
    func.setArgAttr(static_cast<unsigned>(map), LLVM::LLVMDialect::getAlignAttrName(),
                    IntegerAttr::get(IntegerType::get(ctx, 64), 64));

  Block &entry = func.getBody().front();
  ImplicitLocOpBuilder builder(op.getLoc(), ctx);
  builder.setInsertionPointToStart(&entry);
  emitBody(builder, KernelParams{entry.getArgument(0), entry.getArgument(1), entry.getArgument(2),
                                 entry.getArgument(3), entry.getArgument(4), entry.getArgument(5),
                                 entry.getArgument(6), entry.getArgument(7), entry.getArgument(8),
                                 entry.getArgument(9), entry.getArgument(10), entry.getArgument(11),
                                 entry.getArgument(12)});
  gpu::ReturnOp::create(builder);
}

static gpu::GPUModuleOp getOrCreateKernelModule(ModuleOp module) {
  if (auto existing = module.lookupSymbol<gpu::GPUModuleOp>(kKernelModuleName))
    return existing;
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(module.getContext()));
  OpBuilder builder = OpBuilder::atBlockEnd(module.getBody());
  return gpu::GPUModuleOp::create(builder, module.getLoc(), kKernelModuleName);
}

LogicalResult
lowerGroupedGemmOps(ModuleOp module, function_ref<bool(moe::GroupedGemmOp)> selects,
                    function_ref<LogicalResult(moe::GroupedGemmOp, gpu::GPUModuleOp)> lower) {
  SmallVector<moe::GroupedGemmOp> ops;
  module.walk([&](moe::GroupedGemmOp op) {
    if (selects(op))
      ops.push_back(op);
  });
  if (ops.empty())
    return success();
  gpu::GPUModuleOp kernels = getOrCreateKernelModule(module);
  for (moe::GroupedGemmOp op : ops) {
    if (failed(lower(op, kernels)))
      return failure();
    op.erase();
  }
  return success();
}

// --- constants --------------------------------------------------------------

static Block &kernelEntryBlock(Block *insideKernel) {
  Operation *op = insideKernel->getParentOp();
  auto kernel = dyn_cast<gpu::GPUFuncOp>(op);
  if (!kernel)
    kernel = op->getParentOfType<gpu::GPUFuncOp>();
  assert(kernel && "KernelBuilder needs an insertion point inside a gpu.func");
  return kernel.getBody().front();
}

KernelBuilder::KernelBuilder(ImplicitLocOpBuilder &builder)
    : b(builder), constantBlock(&kernelEntryBlock(builder.getInsertionBlock())) {}

Value KernelBuilder::constant(TypedAttr value) {
  auto [it, inserted] = constants.try_emplace(value);
  if (inserted) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(constantBlock);
    it->second = arith::ConstantOp::create(b, value);
  }
  return it->second;
}

// --- guarded regions and shared memory --------------------------------------

Value KernelBuilder::guarded(Value cond, Type type, function_ref<Value()> thenValue,
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

void KernelBuilder::when(Value cond, function_ref<void()> body) {
  auto ifOp = scf::IfOp::create(b, cond, /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  body();
}

void KernelBuilder::whenSet(Value cond, function_ref<void()> body) {
  if (cond)
    when(cond, body);
  else
    body();
}

Value KernelBuilder::dynamicSharedBytes() {
  return gpu::DynamicSharedMemoryOp::create(b,
                                            workgroupMemRef({ShapedType::kDynamic}, b.getI8Type()));
}

MemRefType KernelBuilder::workgroupMemRef(ArrayRef<int64_t> shape, Type element) {
  auto workgroup = gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
  return MemRefType::get(shape, element, MemRefLayoutAttrInterface{}, workgroup);
}

// --- rows, columns and thread items -----------------------------------------

Value GroupedGemmEmitter::storedRow(Value row, Value valid, bool gathered) {
  if (!gathered)
    return row;
  return guarded(
      valid, b.getIndexType(), [&] { return loadIndex(args.gather, row); }, idx(0));
}

std::pair<Value, Value> GroupedGemmEmitter::mapBColumn(Value nTile, Value column) {
  if (attrs.halvesGateUp()) {
    const int64_t half = attrs.tileN / 2;
    Value isUp = arith::CmpIOp::create(b, arith::CmpIPredicate::uge, column, idx(half));
    Value gate = add(mul(nTile, idx(half)), select(isUp, sub(column, idx(half)), column));
    return {select(isUp, add(gate, idx(attrs.n / 2)), gate), lt(gate, idx(attrs.n / 2))};
  }
  if (!attrs.pairsGateUpChunks()) {
    Value global = add(mul(nTile, idx(attrs.tileN)), column);
    return {global, lt(global, idx(attrs.n))};
  }
  Value half = gateColumn(nTile, column);
  Value isUp = arith::CmpIOp::create(b, arith::CmpIPredicate::ne,
                                     remu(divu(column, idx(8)), idx(2)), idx(0));
  Value global = select(isUp, add(half, idx(attrs.n / 2)), half);
  return {global, lt(half, idx(attrs.n / 2))};
}

Value GroupedGemmEmitter::gateColumn(Value nTile, Value column) {
  Value pairBase = mul(divu(column, idx(16)), idx(8));
  return add(add(mul(nTile, idx(attrs.tileN / 2)), pairBase), remu(column, idx(8)));
}

void GroupedGemmEmitter::forEachThreadItem(Value threadId, int64_t threads, int64_t total,
                                           function_ref<void(Value item, Value inRange)> each) {
  const int64_t perThread = (total + threads - 1) / threads;
  for (int64_t j = 0; j < perThread; ++j) {
    Value item = add(threadId, idx(j * threads));
    Value inRange;
    if ((j + 1) * threads > total) {
      inRange = lt(item, idx(total));
      item = arith::MinUIOp::create(b, item, idx(total - 1));
    }
    each(item, inRange);
  }
}

Value GroupedGemmEmitter::fragmentRow() { return divu(lane, idx(4)); }

Value GroupedGemmEmitter::fragmentColumn() { return mul(remu(lane, idx(4)), idx(2)); }

// --- epilogue ---------------------------------------------------------------

Value GroupedGemmEmitter::toElement(Value f32Value) {
  return arith::TruncFOp::create(b, attrs.element, f32Value);
}

Value GroupedGemmEmitter::toF32(Value value) {
  return arith::ExtFOp::create(b, b.getF32Type(), value);
}

// Stores two neighbouring elements (4-byte aligned: columns are even).
void GroupedGemmEmitter::storePair(Value memref, Value offset, Value first, Value second) {
  auto type = VectorType::get({2}, attrs.element);
  Value pair =
      vector::FromElementsOp::create(b, type, ValueRange{toElement(first), toElement(second)});
  vector::StoreOp::create(b, pair, memref, ValueRange{offset},
                          /*nontemporal=*/false, llvm::Align(4));
}

std::pair<Value, Value> GroupedGemmEmitter::loadPair(Value memref, Value offset) {
  auto type = VectorType::get({2}, attrs.element);
  Value pair = vector::LoadOp::create(b, type, memref, ValueRange{offset},
                                      /*nontemporal=*/false, llvm::Align(4));
  return {toF32(vector::ExtractOp::create(b, pair, ArrayRef<int64_t>{0})),
          toF32(vector::ExtractOp::create(b, pair, ArrayRef<int64_t>{1}))};
}

Value GroupedGemmEmitter::tanh(Value x) {
  return NVVM::InlinePtxOp::create(b, TypeRange{b.getF32Type()}, ValueRange{x}, ValueRange{},
                                   "tanh.approx.f32 $0, $1;", Value())
      .getResult(0);
}

// sigmoid(x) = 1 / (1 + e^-x) = 0.5 + 0.5 tanh(x / 2): one MUFU op
// (tanh.approx) instead of two (ex2 and rcp). The epilogue of a gated
// up-projection evaluates it once per output, and the SFU's 16 results per
// clock and SM make it a visible share of the epilogue. tanh.approx's
// error (about 2^-11 of the result) is below bf16's rounding.
Value GroupedGemmEmitter::sigmoid(Value x) {
  Value half = f32(0.5);
  return fadd(half, fmul(half, tanh(fmul(half, x))));
}

// gelu(x) = 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2 / pi).
std::pair<Value, Value> GroupedGemmEmitter::geluAndDerivative(Value x) {
  Value c = f32(0.7978845608028654), a = f32(0.044715), half = f32(0.5), one = f32(1.0);
  Value x2 = fmul(x, x);
  Value t = tanh(fmul(c, fadd(x, fmul(a, fmul(x2, x)))));
  Value value = fmul(fmul(half, x), fadd(one, t));
  Value dInner = fmul(c, fadd(one, fmul(f32(3.0 * 0.044715), x2)));
  Value derivative =
      fadd(fmul(half, fadd(one, t)), fmul(fmul(fmul(half, x), fsub(one, fmul(t, t))), dInner));
  return {value, derivative};
}

// act(x) and act'(x) of the elementwise activation (for GLUs: of the gate).
std::pair<Value, Value> GroupedGemmEmitter::activationAndDerivative(Value x) {
  switch (attrs.activation) {
  case moe::Activation::SwiGLU: { // silu(x) = x sigmoid(x)
    Value s = sigmoid(x), one = f32(1.0);
    return {fmul(x, s), fmul(s, fadd(one, fmul(x, fsub(one, s))))};
  }
  case moe::Activation::GeGLU:
  case moe::Activation::GeLU:
    return geluAndDerivative(x);
  case moe::Activation::ReLU: {
    Value positive = arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, x, f32(0.0));
    return {select(positive, x, f32(0.0)), select(positive, f32(1.0), f32(0.0))};
  }
  case moe::Activation::None:
    return {x, f32(1.0)};
  }
  llvm_unreachable("unknown activation");
}

Value GroupedGemmEmitter::activation(Value gate, Value up) {
  Value a = activationAndDerivative(gate).first;
  return isGated(attrs.activation) ? fmul(a, up) : a;
}

void GroupedGemmEmitter::emitEpilogueRow(Value nTile, Value outRow, Value rowValid,
                                         int64_t n8Blocks,
                                         function_ref<Value(int64_t j)> tileColumn,
                                         function_ref<Value(int64_t j, int64_t e)> fragment) {
  switch (attrs.epilogue) {
  case moe::Epilogue::DActivation:
    emitDActivationRow(nTile, outRow, rowValid, n8Blocks, tileColumn, fragment);
    return;
  case moe::Epilogue::ActForward:
    emitActivationRow(nTile, outRow, rowValid, n8Blocks, tileColumn, fragment);
    return;
  case moe::Epilogue::Store:
  case moe::Epilogue::ScaleRows:
    break;
  }
  // A store or a scaled store per n8 block: short enough to emit unrolled.
  Value rowScale;
  if (attrs.epilogue == moe::Epilogue::ScaleRows)
    rowScale = loadRowScale(outRow, rowValid);
  Value rowBase = mul(outRow, idx(attrs.cColumns));
  auto scaled = [&](Value v) { return rowScale ? fmul(rowScale, v) : v; };
  if (wideStoresApply(n8Blocks)) {
    for (int64_t j = 0; j < n8Blocks; j += 2) {
      Value wordJ = packPair(scaled(fragment(j, 0)), scaled(fragment(j, 1)));
      Value wordNext = packPair(scaled(fragment(j + 1, 0)), scaled(fragment(j + 1, 1)));
      storeBlockPair(nTile, rowBase, sub(tileColumn(j), fragmentColumn()), rowValid, wordJ,
                     wordNext);
    }
    return;
  }
  for (int64_t j = 0; j < n8Blocks; ++j) {
    Value v0 = fragment(j, 0), v1 = fragment(j, 1);
    auto [global, columnValid] = mapBColumn(nTile, tileColumn(j));
    when(land(rowValid, columnValid), [&] {
      if (rowScale)
        storePair(args.c, add(rowBase, global), fmul(rowScale, v0), fmul(rowScale, v1));
      else
        storePair(args.c, add(rowBase, global), v0, v1);
    });
  }
}

// Pairs of n8 blocks are 16 contiguous columns of C when the tile's columns
// map straight to C's (no gate/up split), every pair lies wholly inside or
// outside N (N a multiple of 16) and 8-byte stores stay aligned.
bool GroupedGemmEmitter::wideStoresApply(int64_t n8Blocks) const {
  return wideStores && n8Blocks % 2 == 0 && !attrs.splitsGateUp() && attrs.n % 16 == 0 &&
         attrs.cColumns % 4 == 0;
}

// Two elements as the 32-bit word they are stored as.
Value GroupedGemmEmitter::packPair(Value first, Value second) {
  auto pairType = VectorType::get({2}, attrs.element);
  Value pair = vector::FromElementsOp::create(b, pairType,
                                              ValueRange{toElement(first), toElement(second)});
  Value word = vector::BitCastOp::create(b, VectorType::get({1}, b.getI32Type()), pair);
  return vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0});
}

// Lane q of a quad holds columns 2q, 2q+1 of n8 blocks j (wordJ) and j+1
// (wordNext) of its row: after four shuffles it holds columns 4q..4q+3 of
// the 16-column span (lanes 2(q%2), 2(q%2)+1 of block j + q/2), returned as
// two words. Every lane of the warp must call it (shfl.sync).
std::pair<Value, Value> GroupedGemmEmitter::quadSpanWords(Value wordJ, Value wordNext) {
  // Lane q = lane % 4 holds word q (columns 2q, 2q + 1) of blocks j and
  // j + 1 and ends with words 2(q % 2), 2(q % 2) + 1 of block j (q < 2) or
  // j + 1 (q >= 2). Two butterflies: across q ^ 2 each lane passes the
  // other block's word (the lower half of the quad keeps block j, the upper
  // block j + 1), then across q ^ 1 the word its partner is missing. Two
  // shuffles per pair of blocks instead of four gathers.
  Value q = remu(lane, idx(4));
  auto i32 = [&](int32_t v) { return arith::ConstantOp::create(b, b.getI32IntegerAttr(v)); };
  Value width = i32(kWarpSize);
  auto exchange = [&](Value word, int32_t mask) {
    return gpu::ShuffleOp::create(b, word, i32(mask), width, gpu::ShuffleMode::XOR)
        .getShuffleResult();
  };
  Value upper = arith::CmpIOp::create(b, arith::CmpIPredicate::uge, q, idx(2));
  Value odd = arith::CmpIOp::create(b, arith::CmpIPredicate::ne, remu(q, idx(2)), idx(0));
  Value kept = select(upper, wordNext, wordJ);
  Value received = exchange(select(upper, wordJ, wordNext), 2);
  // This lane's block, words q % 2 (low) and q % 2 + 2 (high).
  Value low = select(upper, received, kept);
  Value high = select(upper, kept, received);
  Value partner = exchange(select(odd, low, high), 1);
  return {select(odd, partner, low), select(odd, high, partner)};
}

// This lane's column in a 16-column span (quadSpanWords): 4 (lane % 4).
Value GroupedGemmEmitter::quadSpanColumn() { return mul(remu(lane, idx(4)), idx(4)); }

// The two words of quadSpanWords as four elements at `offset` (8-byte
// aligned), when `valid`.
void GroupedGemmEmitter::storeSpanWords(Value memref, Value offset, std::pair<Value, Value> words,
                                        Value valid) {
  when(valid, [&] {
    auto wordsType = VectorType::get({2}, b.getI32Type());
    Value pair = vector::FromElementsOp::create(b, wordsType, ValueRange{words.first, words.second});
    Value elements = vector::BitCastOp::create(b, VectorType::get({4}, attrs.element), pair);
    vector::StoreOp::create(b, elements, memref, ValueRange{offset},
                            /*nontemporal=*/false, llvm::Align(8));
  });
}

void GroupedGemmEmitter::storeBlockPair(Value nTile, Value rowBase, Value spanColumn,
                                        Value rowValid, Value wordJ, Value wordNext) {
  std::pair<Value, Value> words = quadSpanWords(wordJ, wordNext);
  auto [global, columnValid] = mapBColumn(nTile, add(spanColumn, quadSpanColumn()));
  storeSpanWords(args.c, add(rowBase, global), words, land(rowValid, columnValid));
}

Value GroupedGemmEmitter::loadRowScale(Value outRow, Value rowValid) {
  return guarded(
      rowValid, b.getF32Type(), [&] { return load(args.scale, outRow); }, f32(0.0));
}

// The activation epilogues are long (a tanh and several products per element,
// loads and several stores per n8 block), so each is emitted once, in a
// loop over the blocks: what differs between blocks (offsets, validity,
// accumulators) is gathered into vectors indexed by the block. The loop is
// annotated for full unrolling, which LLVM does early in its pipeline:
// every vector index turns constant again and the accumulators stay in
// registers, while the MLIR passes, the translation and LLVM's first passes
// handle one copy instead of one per block.
Value GroupedGemmEmitter::emitBlockLoop(ArrayRef<SmallVector<Value>> blocks, Value rowValid,
                                        ArrayRef<Value> blockValid, bool sums,
                                        function_ref<Value(ArrayRef<Value> values)> body) {
  const int64_t count = static_cast<int64_t>(blocks.size());
  SmallVector<Value> vectors;
  for (size_t k = 0; k < blocks.front().size(); ++k) {
    SmallVector<Value> elements;
    for (const SmallVector<Value> &block : blocks)
      elements.push_back(block[k]);
    vectors.push_back(vector::FromElementsOp::create(
        b, VectorType::get({count}, elements.front().getType()), elements));
  }
  Value validVector;
  if (!blockValid.empty())
    validVector =
        vector::FromElementsOp::create(b, VectorType::get({count}, b.getI1Type()), blockValid);
  auto element = [&](Value vector, Value position) -> Value {
    return vector::ExtractOp::create(b, vector, ArrayRef<OpFoldResult>{position});
  };
  auto emitLoop = [&]() -> Value {
    SmallVector<Value> init;
    if (sums)
      init.push_back(f32(0.0));
    auto loop = scf::ForOp::create(b, idx(0), idx(count), idx(1), init);
    loop->setAttr(LLVM::LoopAnnotationAttr::getMnemonic(), fullUnroll());
    OpBuilder::InsertionGuard guard(b);
    // Without loop values the body already ends in its scf.yield.
    if (sums)
      b.setInsertionPointToStart(loop.getBody());
    else
      b.setInsertionPoint(loop.getBody()->getTerminator());
    Value j = loop.getInductionVar();
    SmallVector<Value> values;
    for (Value vector : vectors)
      values.push_back(element(vector, j));
    Value result;
    if (!validVector)
      result = body(values);
    else if (sums)
      result = guarded(
          element(validVector, j), b.getF32Type(), [&] { return body(values); }, f32(0.0));
    else
      when(element(validVector, j), [&] { body(values); });
    if (!sums)
      return Value();
    scf::YieldOp::create(b, fadd(loop.getRegionIterArgs()[0], result));
    return loop.getResult(0);
  };
  if (validVector)
    return emitLoop();
  // Every block of the row exists: one guard for the row.
  if (sums)
    return guarded(rowValid, b.getF32Type(), emitLoop, f32(0.0));
  when(rowValid, [&] { emitLoop(); });
  return Value();
}

LLVM::LoopAnnotationAttr GroupedGemmEmitter::fullUnroll() {
  MLIRContext *ctx = b.getContext();
  auto unroll = LLVM::LoopUnrollAttr::get(ctx, /*disable=*/nullptr, /*count=*/nullptr,
                                          /*runtimeDisable=*/nullptr, BoolAttr::get(ctx, true),
                                          nullptr, nullptr, nullptr);
  return LLVM::LoopAnnotationAttr::get(ctx, nullptr, nullptr, nullptr, unroll, nullptr, nullptr,
                                       nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                       nullptr, nullptr, {});
}

// Columns past N exist only in the last N tile, and only when N is not a
// multiple of the tile.
bool GroupedGemmEmitter::everyColumnExists() const { return attrs.n % attrs.tileN == 0; }

// Forward activation: C = H and aux = act(H). With paired gate/up chunks,
// n8 blocks 2i and 2i+1 hold gate and up of the same activation columns;
// with gate/up halves, blocks i and i + n8Blocks / 2.
void GroupedGemmEmitter::emitActivationRow(Value nTile, Value outRow, Value rowValid,
                                           int64_t n8Blocks,
                                           function_ref<Value(int64_t j)> tileColumn,
                                           function_ref<Value(int64_t j, int64_t e)> fragment) {
  const bool halves = attrs.halvesGateUp();
  const bool paired = attrs.pairsGateUpChunks() || halves;
  const int64_t upBlock = halves ? n8Blocks / 2 : 1; // up j's block - gate j's
  const bool gated = isGated(attrs.activation);
  Value rowBase = mul(outRow, idx(attrs.cColumns));
  Value auxRow = mul(outRow, idx(attrs.auxColumns));
  // H (C) is optional when act(H) goes to aux_out: an inference forward
  // passes C = null and the kernel writes act(H) only (docs/kernel-abi.md).
  Value storesH;
  if (attrs.activation != moe::Activation::None) {
    Value cAddress = memref::ExtractAlignedPointerAsIndexOp::create(b, args.c);
    storesH = arith::CmpIOp::create(b, arith::CmpIPredicate::ne, cAddress, idx(0));
  }
  SmallVector<SmallVector<Value>> blocks;
  SmallVector<Value> blockValid;
  // Gate/up halves with wide stores: gate blocks j, j+1 (16 columns) per
  // loop step, each of C's gate and up columns and of the activation stored
  // 8 bytes per lane after the quad shuffles. The shuffles run on every
  // lane, so the loop is not guarded; the stores are.
  if (halves && wideStores && (n8Blocks / 2) % 2 == 0 && (attrs.n / 2) % 16 == 0 &&
      attrs.cColumns % 4 == 0 && attrs.auxColumns % 4 == 0) {
    for (int64_t j = 0; j < n8Blocks / 2; j += 2) {
      Value span = add(mul(nTile, idx(attrs.tileN / 2)), sub(tileColumn(j), fragmentColumn()));
      SmallVector<Value> block = {span};
      for (int64_t k : {j, j + 1})
        for (int64_t fragmentBlock : {k, k + upBlock})
          for (int64_t e = 0; e < 2; ++e)
            block.push_back(fragment(fragmentBlock, e));
      blocks.push_back(block);
    }
    Value always = arith::ConstantOp::create(b, b.getBoolAttr(true));
    emitBlockLoop(blocks, always, {}, /*sums=*/false, [&](ArrayRef<Value> block) {
      Value span = block[0];
      // block[1 + 4k + 2u + e]: block j + k, gate (u = 0) or up (u = 1), e.
      auto word = [&](int64_t k, int64_t u) {
        return packPair(block[1 + 4 * k + 2 * u], block[2 + 4 * k + 2 * u]);
      };
      auto act = [&](int64_t k) {
        return packPair(activation(block[1 + 4 * k], block[3 + 4 * k]),
                        activation(block[2 + 4 * k], block[4 + 4 * k]));
      };
      Value column = add(span, quadSpanColumn());
      Value valid = land(rowValid, lt(span, idx(attrs.n / 2)));
      Value cOffset = add(rowBase, column);
      Value hValid = land(valid, storesH);
      storeSpanWords(args.c, cOffset, quadSpanWords(word(0, 0), word(1, 0)), hValid);
      storeSpanWords(args.c, add(cOffset, idx(attrs.n / 2)), quadSpanWords(word(0, 1), word(1, 1)),
                     hValid);
      storeSpanWords(args.auxOut, add(auxRow, column), quadSpanWords(act(0), act(1)), valid);
      return Value();
    });
    return;
  }
  for (int64_t j = 0; j < (halves ? n8Blocks / 2 : n8Blocks); j += halves ? 1 : paired ? 2 : 1) {
    Value column = tileColumn(j);
    Value cColumn, auxColumn, columnValid;
    if (paired) {
      cColumn = auxColumn = halves ? add(mul(nTile, idx(attrs.tileN / 2)), column)
                                   : gateColumn(nTile, column);
      columnValid = lt(cColumn, idx(attrs.n / 2));
    } else {
      std::tie(cColumn, columnValid) = mapBColumn(nTile, column);
      // Interleaved GLU: (gate j, up j) are (v0, v1), act j goes to j / 2.
      auxColumn = gated ? divu(cColumn, idx(2)) : cColumn;
    }
    SmallVector<Value> block = {add(rowBase, cColumn), add(auxRow, auxColumn), fragment(j, 0),
                                fragment(j, 1)};
    if (paired) {
      block.push_back(fragment(j + upBlock, 0));
      block.push_back(fragment(j + upBlock, 1));
    }
    blocks.push_back(block);
    blockValid.push_back(land(rowValid, columnValid));
  }
  if (everyColumnExists())
    blockValid.clear();
  emitBlockLoop(blocks, rowValid, blockValid, /*sums=*/false, [&](ArrayRef<Value> block) {
    Value cOffset = block[0], auxOffset = block[1], v0 = block[2], v1 = block[3];
    auto storeH = [&](Value offset, Value first, Value second) {
      whenSet(storesH, [&] { storePair(args.c, offset, first, second); });
    };
    storeH(cOffset, v0, v1);
    if (paired) {
      Value u0 = block[4], u1 = block[5];
      storeH(add(cOffset, idx(attrs.n / 2)), u0, u1);
      storePair(args.auxOut, auxOffset, activation(v0, u0), activation(v1, u1));
    } else if (gated) {
      memref::StoreOp::create(b, toElement(activation(v0, v1)), args.auxOut, ValueRange{auxOffset});
    } else {
      storePair(args.auxOut, auxOffset, activation(v0, Value()), activation(v1, Value()));
    }
    return Value();
  });
}

// dA = (v0, v1) at activation columns j, j+1 of each n8 block. Writes
// dH = dact(H, s dA) and adds this thread's part of
// dS[row] = sum_j dA[row, j] act(H)[row, j] to dS.
void GroupedGemmEmitter::emitDActivationRow(Value nTile, Value outRow, Value rowValid,
                                            int64_t n8Blocks,
                                            function_ref<Value(int64_t j)> tileColumn,
                                            function_ref<Value(int64_t j, int64_t e)> fragment) {
  const bool gated = isGated(attrs.activation);
  const bool interleaved = gated && attrs.gateUp == moe::GateUpLayout::Interleaved;
  Value rowScale = loadRowScale(outRow, rowValid);
  Value rowBase = mul(outRow, idx(attrs.cColumns));
  SmallVector<SmallVector<Value>> blocks;
  SmallVector<Value> blockValid;
  // dH keeps 4-byte stores: the wide-store version (quad shuffles, one
  // branch per 16-column span) gained 3-5% on the H100 but made dh's PTX
  // 20% larger and its compile 12-25% slower, and dh already had the
  // slowest compile (bench/HOPPER_NOTES.md, step 7).
  for (int64_t j = 0; j < n8Blocks; ++j) {
    auto [global, columnValid] = mapBColumn(nTile, tileColumn(j));
    // Offset of gate j in H/dH (interleaved: gate j and up j side by side).
    Value gateOffset = add(rowBase, interleaved ? mul(global, idx(2)) : global);
    blocks.push_back({gateOffset, fragment(j, 0), fragment(j, 1)});
    blockValid.push_back(land(rowValid, columnValid));
  }
  if (everyColumnExists())
    blockValid.clear();
  Value partialDs =
      emitBlockLoop(blocks, rowValid, blockValid, /*sums=*/true, [&](ArrayRef<Value> block) {
        Value gateOffset = block[0], v0 = block[1], v1 = block[2];
        // Gate j (and j+1) and up j (and j+1) of H.
        Value upOffset;
        Value g0, g1, u0, u1;
        if (interleaved) {
          std::tie(g0, u0) = loadPair(args.auxIn, gateOffset);
          std::tie(g1, u1) = loadPair(args.auxIn, add(gateOffset, idx(2)));
        } else {
          std::tie(g0, g1) = loadPair(args.auxIn, gateOffset);
          if (gated) {
            upOffset = add(gateOffset, idx(attrs.n));
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
        if (interleaved) {
          storePair(args.c, gateOffset, dGate[0], dUp[0]);
          storePair(args.c, add(gateOffset, idx(2)), dGate[1], dUp[1]);
        } else {
          storePair(args.c, gateOffset, dGate[0], dGate[1]);
          if (gated)
            storePair(args.c, upOffset, dUp[0], dUp[1]);
        }
        return ds;
      });
  emitRowSumAtomic(partialDs, rowValid, outRow);
}

// The four lanes of a quad share a row: reduce over them, then one atomic
// add per row and warp.
void GroupedGemmEmitter::emitRowSumAtomic(Value partial, Value rowValid, Value outRow) {
  for (int32_t offset : {1, 2}) {
    Value other = gpu::ShuffleOp::create(b, partial, offset, kWarpSize, gpu::ShuffleMode::XOR)
                      .getShuffleResult();
    partial = fadd(partial, other);
  }
  Value leader = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, remu(lane, idx(4)), idx(0));
  when(land(leader, rowValid), [&] {
    memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addf, partial, args.auxOut,
                                ValueRange{outRow});
  });
}

} // namespace moejit::lowering

// compileGemms: GemmProblem -> moe dialect -> LLVM/NVVM dialects -> LLVM IR
// -> NVPTX -> PTX, all in this process.
#include "compiler/backend/compile.h"
#include "compiler/backend/dialects.h"
#include "compiler/backend/ptx_merge.h"
#include "compiler/spec/parallel.h"

#include "compiler/dialect/moe_dialect.h"
#include "compiler/lowering/passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/NVVMToLLVM/NVVMToLLVM.h"
#include "mlir/Conversion/UBToLLVM/UBToLLVM.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVM.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Index/IR/IndexDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Triple.h"

#include <chrono>
#include <memory>
#include <mutex>

namespace moejit {
namespace {

using namespace mlir;

constexpr llvm::StringLiteral kNvptxTriple = "nvptx64-nvidia-cuda";

// Measures consecutive stages: each lap() returns the milliseconds since the
// previous one.
class StageClock {
public:
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double ms =
        std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return ms;
  }

private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

} // namespace

void registerCompilerDialects(DialectRegistry &registry) {
  registry.insert<moe::MoeDialect, arith::ArithDialect, cf::ControlFlowDialect,
                  gpu::GPUDialect, index::IndexDialect, LLVM::LLVMDialect,
                  math::MathDialect, memref::MemRefDialect, NVVM::NVVMDialect,
                  nvgpu::NVGPUDialect, scf::SCFDialect, ub::UBDialect,
                  vector::VectorDialect>();
  // convert-gpu-to-nvvm lowers every loaded dialect through its
  // ConvertToLLVMPatternInterface; these attach the interfaces.
  arith::registerConvertArithToLLVMInterface(registry);
  cf::registerConvertControlFlowToLLVMInterface(registry);
  index::registerConvertIndexToLLVMInterface(registry);
  registerConvertMathToLLVMInterface(registry);
  registerConvertMemRefToLLVMInterface(registry);
  registerConvertNVVMToLLVMInterface(registry);
  ub::registerConvertUBToLLVMInterface(registry);
  vector::registerConvertVectorToLLVMInterface(registry);
  registerBuiltinDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
}

namespace {

bool isPtxIdentifier(const std::string &name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) ||
                        name[0] == '_'))
    return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '$')
      return false;
  return true;
}

moe::Varlen toDialect(Varlen v) {
  return v == Varlen::M ? moe::Varlen::M : moe::Varlen::K;
}
moe::Epilogue toDialect(Epilogue e) {
  switch (e) {
  case Epilogue::Store: return moe::Epilogue::Store;
  case Epilogue::ActForward: return moe::Epilogue::ActForward;
  case Epilogue::ScaleRows: return moe::Epilogue::ScaleRows;
  case Epilogue::DActivation: return moe::Epilogue::DActivation;
  }
  return moe::Epilogue::Store;
}
moe::Activation toDialect(Activation a) {
  switch (a) {
  case Activation::SwiGLU: return moe::Activation::SwiGLU;
  case Activation::GeGLU: return moe::Activation::GeGLU;
  case Activation::GeLU: return moe::Activation::GeLU;
  case Activation::ReLU: return moe::Activation::ReLU;
  case Activation::None: return moe::Activation::None;
  }
  return moe::Activation::None;
}
moe::GateUpLayout toDialect(GateUpLayout l) {
  return l == GateUpLayout::Concatenated ? moe::GateUpLayout::Concatenated
                                         : moe::GateUpLayout::Interleaved;
}
moe::KernelPath toDialect(KernelPath p) {
  return p == KernelPath::Portable ? moe::KernelPath::Portable
                                   : moe::KernelPath::Hopper;
}

void buildGroupedGemm(OpBuilder &builder, const GemmProblem &p,
                      const Target &target) {
  MLIRContext *ctx = builder.getContext();
  Type element = p.dtype == DType::BF16 ? Type(builder.getBF16Type())
                                        : Type(builder.getF16Type());
  const WarpLayout warps = portableWarpLayout(p.schedule);
  const TileShape &tile = p.schedule.tile;
  const KernelPath path = selectKernelPath(p, target);
  auto op = moe::GroupedGemmOp::create(
      builder, NameLoc::get(builder.getStringAttr(p.kernelName)),
      builder.getStringAttr(p.kernelName), moe::VarlenAttr::get(ctx, toDialect(p.varlen)),
      TypeAttr::get(element), builder.getI64IntegerAttr(p.experts), builder.getI64IntegerAttr(p.m),
      builder.getI64IntegerAttr(p.n), builder.getI64IntegerAttr(p.k),
      builder.getBoolAttr(p.aKContiguous), builder.getBoolAttr(p.bKContiguous),
      p.gatherA ? builder.getUnitAttr() : UnitAttr(),
      p.gatherB ? builder.getUnitAttr() : UnitAttr(),
      p.scaleBRows ? builder.getUnitAttr() : UnitAttr(),
      moe::EpilogueAttr::get(ctx, toDialect(p.epilogue)),
      moe::ActivationAttr::get(ctx, toDialect(p.activation)),
      moe::GateUpLayoutAttr::get(ctx, toDialect(p.gateUp)), builder.getI64IntegerAttr(p.cColumns),
      builder.getI64IntegerAttr(p.auxColumns),
      builder.getDenseI64ArrayAttr({tile.m, tile.n, tile.k}),
      builder.getI64IntegerAttr(p.schedule.stages),
      builder.getDenseI64ArrayAttr({warps.m, warps.n}),
      moe::KernelPathAttr::get(ctx, toDialect(path)),
      path == KernelPath::Hopper && hopperPingPong(p.schedule) ? builder.getUnitAttr() : UnitAttr(),
      builder.getI64IntegerAttr(path == KernelPath::Hopper ? hopperClusterSize(p, target) : 1),
      path == KernelPath::Hopper && !hopperPingPong(p.schedule) &&
              p.schedule.raster == Raster::AlongM
          ? builder.getUnitAttr()
          : UnitAttr(),
      path == KernelPath::Hopper && hopperStaggered(p.schedule) ? builder.getUnitAttr()
                                                                : UnitAttr(),
      path == KernelPath::Hopper && hopperTmaStores(p, target) ? builder.getUnitAttr()
                                                               : UnitAttr());
  (void)op;
}

std::string printOp(Operation *op) {
  std::string text;
  llvm::raw_string_ostream os(text);
  op->print(os);
  return text;
}

void initializeNvptxOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTarget();
    LLVMInitializeNVPTXTargetMC();
    LLVMInitializeNVPTXAsmPrinter();
  });
}

// PTX ISA the backend targets: 8.0 covers sm_80..sm_90a; newer chips need
// the ISA that introduced them.
std::string ptxFeatures(const Target &target) {
  return target.computeCapability() >= 100 ? "+ptx86" : "+ptx80";
}

llvm::CodeGenOptLevel codegenOptLevel(int level) {
  switch (level) {
  case 0: return llvm::CodeGenOptLevel::None;
  case 1: return llvm::CodeGenOptLevel::Less;
  case 2: return llvm::CodeGenOptLevel::Default;
  default: return llvm::CodeGenOptLevel::Aggressive;
  }
}

llvm::OptimizationLevel irOptLevel(int level) {
  switch (level) {
  case 0: return llvm::OptimizationLevel::O0;
  case 1: return llvm::OptimizationLevel::O1;
  case 2: return llvm::OptimizationLevel::O2;
  default: return llvm::OptimizationLevel::O3;
  }
}

std::unique_ptr<llvm::TargetMachine> createTargetMachine(const Target &target,
                                                         int optLevel,
                                                         std::string &error) {
  initializeNvptxOnce();
  llvm::Triple triple(kNvptxTriple);
  const llvm::Target *nvptx =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!nvptx)
    return nullptr;
  std::unique_ptr<llvm::TargetMachine> machine(nvptx->createTargetMachine(
      triple, target.arch, ptxFeatures(target), llvm::TargetOptions(),
      std::nullopt, std::nullopt, codegenOptLevel(optLevel)));
  if (!machine)
    error = "cannot create the NVPTX target machine for " + target.arch;
  return machine;
}

void optimize(llvm::Module &module, llvm::TargetMachine &machine,
              int optLevel) {
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager cgscc;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder builder(&machine);
  builder.registerModuleAnalyses(modules);
  builder.registerCGSCCAnalyses(cgscc);
  builder.registerFunctionAnalyses(functions);
  builder.registerLoopAnalyses(loops);
  builder.crossRegisterProxies(loops, functions, cgscc, modules);
  builder.buildPerModuleDefaultPipeline(irOptLevel(optLevel))
      .run(module, modules);
}

bool emitPtx(llvm::Module &module, llvm::TargetMachine &machine,
             std::string &ptx, std::string &error) {
  llvm::SmallString<0> buffer;
  llvm::raw_svector_ostream os(buffer);
  llvm::legacy::PassManager codegen;
  if (machine.addPassesToEmitFile(codegen, os, nullptr,
                                  llvm::CodeGenFileType::AssemblyFile)) {
    error = "the NVPTX target cannot emit assembly";
    return false;
  }
  codegen.run(module);
  ptx.assign(buffer.begin(), buffer.end());
  return true;
}

} // namespace

namespace {

// All problems in one MLIR module, one LLVM module, one PTX.
bool compileModule(const std::vector<GemmProblem> &problems,
                   const CompileOptions &options, CompileOutput &out,
                   std::string &error) {
  out = CompileOutput{};
  StageClock clock;
  DialectRegistry registry;
  registerCompilerDialects(registry);
  MLIRContext ctx(registry, MLIRContext::Threading::DISABLED);
  ctx.loadAllAvailableDialects();

  std::string diagnostics;
  llvm::raw_string_ostream diagnosticStream(diagnostics);
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &diag) {
    diagnosticStream << diag.getLocation() << ": "
                     << (diag.getSeverity() == DiagnosticSeverity::Error
                             ? "error: "
                             : "note: ")
                     << diag << "\n";
    return success();
  });
  auto fail = [&](const std::string &what) {
    error = what;
    if (!diagnostics.empty())
      error += "\n" + diagnostics;
    return false;
  };

  OpBuilder builder(&ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(builder.getUnknownLoc());
  builder.setInsertionPointToEnd(module->getBody());
  for (const GemmProblem &problem : problems) {
    if (!isPtxIdentifier(problem.kernelName))
      return fail("kernel name '" + problem.kernelName +
                  "' is not a valid PTX identifier");
    buildGroupedGemm(builder, problem, options.target);
    out.kernelNames.push_back(problem.kernelName);
  }
  if (failed(verify(*module)))
    return fail("the moe module built from the problems is invalid");
  out.times.build = clock.lap();
  if (options.stage == EmitStage::Mlir) {
    out.text = printOp(module->getOperation());
    return true;
  }

  PassManager pm(&ctx);
  buildMoeToLLVMPipeline(pm);
  // Verifying after every pass cost a sixth of the compile; the lit tests
  // (moejit-opt) verify after each pass, here the result is verified once.
  pm.enableVerifier(false);
  llvm::raw_string_ostream dumpStream(out.dumps);
  if (!options.dumpAfter.empty()) {
    const std::string wanted = options.dumpAfter;
    pm.enableIRPrinting(
        [](Pass *, Operation *) { return false; },
        [wanted](Pass *pass, Operation *) {
          return pass->getArgument() == wanted;
        },
        /*printModuleScope=*/false, /*printAfterOnlyOnChange=*/false,
        /*printAfterOnlyOnFailure=*/false, dumpStream);
  }
  if (failed(pm.run(*module)) || failed(verify(*module)))
    return fail("lowering the moe module to the LLVM dialect failed");
  out.times.lower = clock.lap();

  auto kernels = module->lookupSymbol<gpu::GPUModuleOp>("moejit_kernels");
  if (!kernels)
    return fail("the lowering produced no gpu.module @moejit_kernels");
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(kernels, llvmContext, "moejit_kernels");
  if (!llvmModule)
    return fail("translating the kernels to LLVM IR failed");
  out.times.translate = clock.lap();

  std::unique_ptr<llvm::TargetMachine> machine =
      createTargetMachine(options.target, options.llvmOptLevel, error);
  if (!machine)
    return false;
  llvmModule->setTargetTriple(machine->getTargetTriple());
  llvmModule->setDataLayout(machine->createDataLayout());
  optimize(*llvmModule, *machine, options.llvmOptLevel);
  out.times.optimize = clock.lap();
  if (options.stage == EmitStage::Llvm) {
    llvm::raw_string_ostream os(out.text);
    llvmModule->print(os, nullptr);
    return true;
  }
  const bool emitted = emitPtx(*llvmModule, *machine, out.text, error);
  out.times.codegen = clock.lap();
  return emitted;
}

void addTimes(CompileStageTimes &sum, const CompileStageTimes &part) {
  sum.build += part.build;
  sum.lower += part.lower;
  sum.translate += part.translate;
  sum.optimize += part.optimize;
  sum.codegen += part.codegen;
}

} // namespace

// The kernels are independent, and a layer's six take 0.6-1.5 s one after
// the other: to PTX, each is compiled on its own thread (own MLIR and LLVM
// contexts) and the PTX modules are merged. Where the merge refuses them,
// or a stage before PTX or a dump is asked for, they are compiled as one
// module.
bool compileGemms(const std::vector<GemmProblem> &problems,
                  const CompileOptions &options, CompileOutput &out,
                  std::string &error) {
  if (problems.size() < 2 || options.stage != EmitStage::Ptx ||
      !options.dumpAfter.empty())
    return compileModule(problems, options, out, error);
  const size_t count = problems.size();
  std::vector<CompileOutput> parts(count);
  std::vector<std::string> errors(count);
  std::vector<char> compiled(count, 0);
  parallelFor(static_cast<int64_t>(count), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      compiled[i] = compileModule({problems[i]}, options, parts[i], errors[i]);
  });
  out = CompileOutput{};
  for (size_t i = 0; i < count; ++i)
    if (!compiled[i]) {
      error = errors[i];
      return false;
    }
  std::vector<std::string> modules;
  for (CompileOutput &part : parts)
    modules.push_back(std::move(part.text));
  std::string why;
  if (!mergePtxModules(modules, out.text, why))
    return compileModule(problems, options, out, error);
  for (const CompileOutput &part : parts) {
    out.kernelNames.insert(out.kernelNames.end(), part.kernelNames.begin(),
                           part.kernelNames.end());
    addTimes(out.times, part.times);
  }
  return true;
}

} // namespace moejit

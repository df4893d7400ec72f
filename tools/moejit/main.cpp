// The moejit command line: check, fmt, compile, run, info.
#include "compiler/backend/compile.h"
#include "moejit/dsl.h"
#include "moejit/knobs.h"
#include "moejit/problem.h"
#include "moejit/version.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/run.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>

namespace {

using namespace moejit;

// Exit codes: 0 ok, 1 bad input (diagnostics printed), 2 usage or I/O error,
// 3 a GPU run failed its check.
constexpr int kExitBadInput = 1;
constexpr int kExitUsage = 2;

std::optional<std::string> readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << fmt::format("moejit: error: cannot read '{}': {}\n", path,
                             std::strerror(errno));
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool writeOutput(const std::string &path, const std::string &text) {
  if (path.empty() || path == "-") {
    std::cout << text;
    return true;
  }
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) {
    std::cerr << fmt::format("moejit: error: cannot write '{}': {}\n", path,
                             std::strerror(errno));
    return false;
  }
  return true;
}

// The target: --arch, else MOEJIT_ARCH, else the GPU present, else sm_90a.
std::optional<Target> resolveTarget(const std::string &archFlag, const Knobs &knobs) {
  std::string arch = archFlag;
  if (arch.empty())
    arch = knobs.arch;
  if (arch.empty())
    arch = defaultArchOfPresentGpu(knobs).value_or("sm_90a");
  try {
    Target target = Target::fromArch(arch);
    if (archFlag.empty() && knobs.arch.empty())
      applyPresentGpu(knobs, target);
    return target;
  } catch (const std::invalid_argument &e) {
    std::cerr << "moejit: error: " << e.what() << "\n";
    return std::nullopt;
  }
}

// Reads and checks a .moe file; prints diagnostics and returns nullopt on error.
std::optional<Spec> loadSpec(const std::string &path, const Target &target) {
  std::optional<std::string> text = readFile(path);
  if (!text)
    return std::nullopt;
  Diagnostics diags(*text);
  std::optional<Spec> spec = parseSpec(*text, path, target, diags);
  if (!diags.all().empty())
    std::cerr << diags.render();
  return spec;
}

std::optional<EmitStage> parseEmitStage(const std::string &emit) {
  if (emit == "mlir")
    return EmitStage::Mlir;
  if (emit == "llvm")
    return EmitStage::Llvm;
  if (emit == "ptx")
    return EmitStage::Ptx;
  return std::nullopt;
}

int cmdCheck(const std::string &file, const std::string &archFlag, const Knobs &knobs) {
  std::optional<Target> target = resolveTarget(archFlag, knobs);
  if (!target)
    return kExitUsage;
  std::optional<Spec> spec = loadSpec(file, *target);
  if (!spec)
    return kExitBadInput;
  size_t gemms = 0;
  for (const LayerSpec &layer : spec->layers)
    gemms += layer.gemms.size();
  std::cout << fmt::format("{}: ok ({} layer{}, {} grouped GEMM{}, target {})\n", file,
                           spec->layers.size(), spec->layers.size() == 1 ? "" : "s",
                           gemms, gemms == 1 ? "" : "s", target->arch);
  return 0;
}

int cmdFmt(const std::string &file, const std::string &archFlag, const std::string &out,
           const Knobs &knobs) {
  std::optional<Target> target = resolveTarget(archFlag, knobs);
  if (!target)
    return kExitUsage;
  std::optional<Spec> spec = loadSpec(file, *target);
  if (!spec)
    return kExitBadInput;
  return writeOutput(out, printSpec(*spec)) ? 0 : kExitUsage;
}

int cmdCompile(const std::string &file, const std::string &emit, const std::string &archFlag,
               const std::string &out, const std::string &dumpAfter,
               const std::string &layerName, const Knobs &knobs) {
  std::optional<Target> target = resolveTarget(archFlag, knobs);
  if (!target)
    return kExitUsage;
  if (emit == "ast") {
    std::optional<std::string> text = readFile(file);
    if (!text)
      return kExitUsage;
    Diagnostics diags(*text);
    std::optional<std::string> ast = dumpAst(*text, file, diags);
    if (!diags.all().empty())
      std::cerr << diags.render();
    if (!ast)
      return kExitBadInput;
    return writeOutput(out, *ast) ? 0 : kExitUsage;
  }
  std::optional<Spec> spec = loadSpec(file, *target);
  if (!spec)
    return kExitBadInput;
  if (!layerName.empty() && !spec->layer(layerName)) {
    std::cerr << fmt::format("moejit: error: {} has no layer '{}'\n", file, layerName);
    return kExitUsage;
  }
  if (emit == "spec") {
    nlohmann::json json = toJson(*spec);
    if (!layerName.empty())
      json = toJson(*spec->layer(layerName));
    return writeOutput(out, json.dump(2) + "\n") ? 0 : kExitUsage;
  }
  std::optional<EmitStage> stage = parseEmitStage(emit);
  if (!stage) {
    std::cerr << fmt::format("moejit: error: unknown --emit={}; use ast, spec, mlir, "
                             "llvm or ptx\n",
                             emit);
    return kExitUsage;
  }
  std::vector<GemmProblem> problems;
  for (const LayerSpec &layer : spec->layers) {
    if (!layerName.empty() && layer.name != layerName)
      continue;
    for (const GemmSpec &gemm : layer.gemms)
      problems.push_back(makeGemmProblem(layer, gemm));
  }
  CompileOptions options;
  options.target = *target;
  options.stage = *stage;
  options.dumpAfter = dumpAfter;
  CompileOutput output;
  std::string error;
  if (!compileGemms(problems, options, output, error)) {
    std::cerr << "moejit: error: compiling " << file << " failed:\n" << error << "\n";
    return kExitBadInput;
  }
  if (!output.dumps.empty())
    std::cerr << output.dumps;
  return writeOutput(out, output.text) ? 0 : kExitUsage;
}

int cmdInfo(const Knobs &knobs) {
  std::cout << fmt::format("moejit {}\n", kVersion);
  std::cout << fmt::format("LLVM/MLIR {}\n", kLlvmVersion);
  std::cout << fmt::format("CUDA toolkit headers {}\n", kCudaToolkitVersion);
  std::cout << describeGpu(knobs);
  std::cout << "environment knobs:\n";
  for (const auto &[name, value] : knobs.describe())
    std::cout << fmt::format("  {:<20} {}\n", name, value);
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"moejit: a JIT kernel generator for Mixture-of-Experts grouped GEMMs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(moejit::kVersion));

  std::string file, arch, out, emit = "ptx", dumpAfter, layer;

  CLI::App *check = app.add_subcommand("check", "Parse and check a .moe spec");
  check->add_option("file", file, "the .moe file")->required();
  check->add_option("--arch", arch, "target architecture (sm_80, sm_90a, ...)");

  CLI::App *fmtCmd = app.add_subcommand("fmt", "Print the canonical form of a .moe spec");
  fmtCmd->add_option("file", file, "the .moe file")->required();
  fmtCmd->add_option("--arch", arch, "target architecture the schedules are filled for");
  fmtCmd->add_option("-o,--output", out, "write here instead of stdout");

  CLI::App *compile =
      app.add_subcommand("compile", "Compile a .moe spec and print a stage");
  compile->add_option("file", file, "the .moe file")->required();
  compile->add_option("--emit", emit, "stage to print: ast, spec, mlir, llvm, ptx")
      ->check(CLI::IsMember({"ast", "spec", "mlir", "llvm", "ptx"}));
  compile->add_option("--arch", arch, "target architecture (default: the GPU present, "
                                      "else sm_90a)");
  compile->add_option("-o,--output", out, "write here instead of stdout");
  compile->add_option("--dump-after", dumpAfter,
                      "print the IR after this pass (its argument name) to stderr");
  compile->add_option("--layer", layer, "only this layer");

  RunOptions runOptions;
  CLI::App *run = app.add_subcommand(
      "run", "Run the grouped GEMMs of a spec on the GPU against a CPU reference");
  run->add_option("file", runOptions.file, "the .moe file")->required();
  run->add_option("--tokens", runOptions.tokens, "token count T")->required();
  run->add_option("--routing", runOptions.routing,
                  "uniform, zipf:S (skewed, S > 0) or file:PATH");
  run->add_option("--seed", runOptions.seed, "random seed");
  run->add_option("--layer", runOptions.layer, "only this layer");
  run->add_option("--gemm", runOptions.gemm, "only this grouped GEMM (up_proj, ...)");
  run->add_option("--arch", runOptions.arch, "target architecture (default: the GPU's)");
  run->add_option("--iters", runOptions.iters, "timed iterations (median reported)");

  app.add_subcommand("info", "Versions, GPU driver and environment knobs");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }

  moejit::Knobs knobs;
  try {
    knobs = moejit::Knobs::fromEnvironment();
  } catch (const std::invalid_argument &e) {
    std::cerr << "moejit: error: " << e.what() << "\n";
    return kExitUsage;
  }

  try {
    if (*check)
      return cmdCheck(file, arch, knobs);
    if (*fmtCmd)
      return cmdFmt(file, arch, out, knobs);
    if (*compile)
      return cmdCompile(file, emit, arch, out, dumpAfter, layer, knobs);
    if (*run)
      return runCommand(runOptions, std::cout, std::cerr);
    return cmdInfo(knobs);
  } catch (const std::exception &e) {
    std::cerr << "moejit: error: " << e.what() << "\n";
    return kExitUsage;
  }
}

// Compile latency of the grouped-GEMM kernels: for every GEMM of every layer
// of the given .moe files, the wall time from GemmProblem to PTX (build the
// moe module, lower, translate, NVPTX), first call and repeated calls in one
// process.
//
//   compile_latency [--arch=sm_90a] [--repeat=N] [--opt=0..3] [--emit-dir=DIR]
//                   FILE.moe...
//
// Per kernel it prints the first call's time and the median of the repeats,
// and the median's stages: build (MLIR context + moe module), lower (MLIR
// passes), translate (to LLVM IR), opt (LLVM IR pipeline), codegen (NVPTX).
// With --emit-dir, the PTX of each file goes to DIR/<file stem>.ptx.
#include "compiler/backend/compile.h"
#include "moejit/dsl.h"
#include "moejit/problem.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string arch = "sm_90a";
  int repeat = 5;
  int optLevel = 3;
  std::string emitDir;
  std::vector<std::string> files;
};

double millisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

// Compiles `problems` to PTX once and returns the wall time in ms (< 0 on
// failure, with the error printed).
double timeCompile(const std::vector<moejit::GemmProblem> &problems,
                   const moejit::CompileOptions &options,
                   moejit::CompileOutput &out) {
  std::string error;
  const auto start = std::chrono::steady_clock::now();
  const bool ok = moejit::compileGemms(problems, options, out, error);
  const double ms = millisecondsSince(start);
  if (!ok) {
    std::cerr << "error: " << error << "\n";
    return -1.0;
  }
  return ms;
}

int run(const Options &opts) {
  const moejit::Target target = moejit::Target::fromArch(opts.arch);
  moejit::CompileOptions compileOptions;
  compileOptions.target = target;
  compileOptions.llvmOptLevel = opts.optLevel;
  std::printf("%-36s %7s %9s %9s | %7s %7s %7s %7s %7s\n", "kernel", "ptx KB",
              "first ms", "median", "build", "lower", "transl", "opt",
              "codegen");
  int failures = 0;
  for (const std::string &file : opts.files) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    moejit::Diagnostics diags(text.str());
    std::optional<moejit::Spec> spec =
        moejit::parseSpec(text.str(), file, target, diags);
    if (!spec) {
      std::cerr << diags.render();
      ++failures;
      continue;
    }
    std::vector<moejit::GemmProblem> all;
    for (const moejit::LayerSpec &layer : spec->layers) {
      for (const moejit::GemmSpec &gemm : layer.gemms) {
        std::vector<moejit::GemmProblem> one{moejit::makeGemmProblem(layer, gemm)};
        all.push_back(one.front());
        moejit::CompileOutput out;
        const double first = timeCompile(one, compileOptions, out);
        if (first < 0) {
          ++failures;
          continue;
        }
        // The stage times reported are those of the median run.
        std::vector<std::pair<double, moejit::CompileStageTimes>> repeated;
        for (int i = 0; i < opts.repeat; ++i) {
          const double ms = timeCompile(one, compileOptions, out);
          repeated.emplace_back(ms, out.times);
        }
        std::sort(repeated.begin(), repeated.end(),
                  [](const auto &x, const auto &y) { return x.first < y.first; });
        const auto median = repeated.empty()
                                ? std::pair{first, out.times}
                                : repeated[repeated.size() / 2];
        const moejit::CompileStageTimes &t = median.second;
        std::printf("%-36s %7.1f %9.1f %9.1f | %7.1f %7.1f %7.1f %7.1f %7.1f\n",
                    one.front().kernelName.c_str(), out.text.size() / 1024.0,
                    first, median.first, t.build, t.lower, t.translate,
                    t.optimize, t.codegen);
      }
    }
    if (!opts.emitDir.empty()) {
      moejit::CompileOutput out;
      if (timeCompile(all, compileOptions, out) < 0) {
        ++failures;
        continue;
      }
      std::filesystem::path path = std::filesystem::path(opts.emitDir) /
                                   std::filesystem::path(file).stem();
      path += ".ptx";
      std::ofstream(path) << out.text;
    }
  }
  return failures == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  Options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--arch=", 0) == 0)
      opts.arch = arg.substr(7);
    else if (arg.rfind("--repeat=", 0) == 0)
      opts.repeat = std::stoi(arg.substr(9));
    else if (arg.rfind("--opt=", 0) == 0)
      opts.optLevel = std::stoi(arg.substr(6));
    else if (arg.rfind("--emit-dir=", 0) == 0)
      opts.emitDir = arg.substr(11);
    else
      opts.files.push_back(arg);
  }
  if (opts.files.empty()) {
    std::cerr << "usage: compile_latency [--arch=sm_90a] [--repeat=N] "
                 "[--opt=0..3] [--emit-dir=DIR] FILE.moe...\n";
    return 2;
  }
  try {
    return run(opts);
  } catch (const std::exception &e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

// Compile latency of the grouped-GEMM kernels: for every GEMM of every layer
// of the given .moe files, the wall time from GemmProblem to PTX (build the
// moe module, lower, translate, NVPTX), first call and repeated calls in one
// process.
//
//   compile_latency [--arch=sm_90a] [--repeat=N] [--opt=0..3] [--emit-dir=DIR]
//                   FILE.moe...
//
// Per kernel it prints the first call's time, the median and the minimum of
// the repeats, the median of their thread CPU time (steadier than wall time
// on a shared host) and the stages of the fastest repeat: build (MLIR
// context + moe module), lower (MLIR passes), translate (to LLVM IR), opt
// (LLVM IR pipeline), codegen (NVPTX).
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

#include <time.h>

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

double threadCpuMilliseconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e3 + static_cast<double>(now.tv_nsec) * 1e-6;
}

struct Timing {
  double wallMs = -1.0; // < 0: the compile failed
  double cpuMs = 0.0;
  moejit::CompileStageTimes stages;
};

// Compiles `problems` to PTX once and times it (wall < 0 on failure, with
// the error printed).
Timing timeCompile(const std::vector<moejit::GemmProblem> &problems,
                   const moejit::CompileOptions &options,
                   moejit::CompileOutput &out) {
  std::string error;
  const double cpuStart = threadCpuMilliseconds();
  const auto start = std::chrono::steady_clock::now();
  const bool ok = moejit::compileGemms(problems, options, out, error);
  Timing timing;
  timing.wallMs = millisecondsSince(start);
  timing.cpuMs = threadCpuMilliseconds() - cpuStart;
  timing.stages = out.times;
  if (!ok) {
    std::cerr << "error: " << error << "\n";
    timing.wallMs = -1.0;
  }
  return timing;
}

int run(const Options &opts) {
  const moejit::Target target = moejit::Target::fromArch(opts.arch);
  moejit::CompileOptions compileOptions;
  compileOptions.target = target;
  compileOptions.llvmOptLevel = opts.optLevel;
  std::printf("%-36s %7s %9s %7s %7s %7s | %7s %7s %7s %7s %7s\n", "kernel",
              "ptx KB", "first ms", "median", "min", "cpu", "build", "lower",
              "transl", "opt", "codegen");
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
        const Timing first = timeCompile(one, compileOptions, out);
        if (first.wallMs < 0) {
          ++failures;
          continue;
        }
        std::vector<Timing> repeated;
        for (int i = 0; i < opts.repeat; ++i) {
          Timing timing = timeCompile(one, compileOptions, out);
          if (timing.wallMs >= 0)
            repeated.push_back(timing);
        }
        if (repeated.empty())
          repeated.push_back(first);
        auto byWall = [](const Timing &x, const Timing &y) { return x.wallMs < y.wallMs; };
        std::sort(repeated.begin(), repeated.end(), byWall);
        const Timing &fastest = repeated.front();
        const double medianWall = repeated[repeated.size() / 2].wallMs;
        std::vector<double> cpu;
        for (const Timing &t : repeated)
          cpu.push_back(t.cpuMs);
        std::nth_element(cpu.begin(), cpu.begin() + cpu.size() / 2, cpu.end());
        const moejit::CompileStageTimes &t = fastest.stages;
        std::printf("%-36s %7.1f %9.1f %7.1f %7.1f %7.1f | %7.1f %7.1f %7.1f %7.1f %7.1f\n",
                    one.front().kernelName.c_str(), out.text.size() / 1024.0,
                    first.wallMs, medianWall, fastest.wallMs, cpu[cpu.size() / 2],
                    t.build, t.lower, t.translate, t.optimize, t.codegen);
      }
    }
    if (!opts.emitDir.empty()) {
      moejit::CompileOutput out;
      if (timeCompile(all, compileOptions, out).wallMs < 0) {
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

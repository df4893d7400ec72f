// PTX and cubins loaded through the driver's JIT, modules, kernel lookup
// by the name the compiler assigned, and the launch of the kernel ABI
// (docs/kernel-abi.md).
#pragma once

#include "moejit/problem.h"
#include "runtime/src/device.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moejit {


// A kernel of a loaded Module; valid while the Module lives.
class Function {
public:
  Function(DeviceContextRef context, CUfunction function, std::string name);

  CUfunction handle() const { return function_; }
  const std::string &name() const { return name_; }
  const CudaDriver &driver() const { return *context_->driver; }
  // Raises CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES when `bytes` is
  // over what the kernel may use now (48 KiB until raised).
  void reserveDynamicShared(unsigned bytes);
  // Clusters of `shape.cluster` CTAs of this kernel that the GPU holds at
  // once with the shape's block and shared memory (cuOccupancyMaxActiveClusters,
  // asked once per kernel).
  unsigned residentClusters(const LaunchShape &shape);

private:
  DeviceContextRef context_;
  CUfunction function_ = nullptr;
  std::string name_;
  unsigned dynamicSharedLimit_ = 48 * 1024;
  unsigned residentClusters_ = 0; // 0: not asked yet
};

class Module {
public:
  // From PTX, compiled by the driver's JIT as a whole program (the driver's
  // default optimisation level; its compute cache serves repeated loads),
  // or from a cubin image. Whole-program, not through cuLink: a linked
  // module is compiled as relocatable code, where ptxas ignores setmaxnreg
  // and caps every thread of a Hopper kernel at the launch's 168 registers,
  // so the consumer warpgroups spilled (bench/HOPPER_NOTES.md, step 6).
  // MOEJIT_JIT_LOG=1 prints the JIT's verbose log (registers, spills).
  static Module fromPtx(const Gpu &gpu, std::string_view ptx);
  static Module fromCubin(const Gpu &gpu, const std::vector<char> &cubin);
  // The cubin's module, or nullopt when the driver refuses the image (made
  // for another GPU, or by a newer toolkit than the driver knows); with
  // MOEJIT_JIT_LOG=1 the reason goes to stderr.
  static std::optional<Module> tryFromCubin(const Gpu &gpu, const std::vector<char> &cubin);

  Module(Module &&other) noexcept;
  Module &operator=(Module &&other) noexcept;
  ~Module();

  // Throws Error naming the kernel when the module has no such entry.
  Function function(const std::string &name) const;

private:
  Module(DeviceContextRef context, CUmodule module)
      : context_(std::move(context)), module_(module) {}
  void release() noexcept;

  DeviceContextRef context_;
  CUmodule module_ = nullptr;
};

// The kernel parameters (KernelArg order); device pointers may be 0.
struct KernelArgs {
  CUdeviceptr a = 0, b = 0, c = 0, auxIn = 0, auxOut = 0, offsets = 0, gather = 0, scale = 0;
  int32_t totalRows = 0;
  CUtensorMap weightMap{}; // set by setWeightMap; zeros when unused
  CUtensorMap activationMap{}; // set by setLaunchMaps; zeros when unused
  CUtensorMap outputMap{};     // the same for C
  CUtensorMap auxMap{};        // the same for aux_out
};

// Encodes the tensor map of B (args.b) when the problem's kernel loads B by
// TMA (usesWeightTma), else zeros it. Throws Error when the driver rejects
// it (for example a B pointer that is not 16-byte aligned).
void setWeightMap(const CudaDriver &cu, const GemmProblem &problem, const Target &target,
                  KernelArgs &args);

// Encodes the tensor maps that move with every launch: A's (args.a,
// args.totalRows rows) when the problem's kernel loads A by TMA
// (usesActivationTma), and C's and aux_out's when it stores them by TMA
// (usesOutputTma; a null pointer gets no map: the kernel does not write
// it); zeros for the others. Host-side encodes, no driver round trip.
// Throws Error when the driver rejects one.
void setLaunchMaps(const CudaDriver &cu, const GemmProblem &problem, const Target &target,
                   KernelArgs &args);

// setWeightMap for one kernel, encoding again only when B moved: launches
// are a hot path and a layer's weights rarely move. Thread-safe; movable.
class WeightMapCache {
public:
  void set(const CudaDriver &cu, const GemmProblem &problem, const Target &target,
           KernelArgs &args) const;

private:
  struct State {
    std::mutex mutex;
    bool valid = false;
    CUdeviceptr b = 0;
    CUtensorMap map{};
  };
  std::unique_ptr<State> state_ = std::make_unique<State>();
};

// The most CTAs a launch of `shape` should use: for a persistent kernel
// with clusters, the clusters the GPU holds at once times their size (a
// cluster that waits for a free GPC stretches the static schedule); no cap
// otherwise.
unsigned persistentGridCap(Function &function, const LaunchShape &shape);

// Launches `function` with `shape` on `stream`, raising the dynamic shared
// memory limit when needed. A grid with a zero dimension launches nothing.
void launchKernel(Function &function, const LaunchShape &shape, const KernelArgs &args,
                  const Stream &stream);

} // namespace moejit

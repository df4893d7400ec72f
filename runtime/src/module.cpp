#include "runtime/src/module.h"

#include "moejit/knobs.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>
#include <utility>

namespace moejit {

namespace {

std::string trimLog(const char *log) {
  std::string text(log);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0'))
    text.pop_back();
  return text;
}

} // namespace

Module Module::fromPtx(const Gpu &gpu, std::string_view ptx) {
  const CudaDriver &cu = gpu.driver();
  const bool verbose = Knobs::fromEnvironment().jitLog;
  constexpr size_t kLogBytes = 64 * 1024;
  std::vector<char> errorLog(kLogBytes, '\0');
  std::vector<char> infoLog(kLogBytes, '\0');
  CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                            CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
                            CU_JIT_LOG_VERBOSE};
  void *values[] = {errorLog.data(), reinterpret_cast<void *>(kLogBytes - 1), infoLog.data(),
                    reinterpret_cast<void *>(kLogBytes - 1),
                    reinterpret_cast<void *>(static_cast<uintptr_t>(verbose ? 1 : 0))};
  // The driver reads the PTX as a NUL-terminated string.
  const std::string text(ptx);
  CUmodule module = nullptr;
  const CUresult result = cu.cuModuleLoadDataEx.fn(&module, text.c_str(), 5u, options, values);
  if (result != CUDA_SUCCESS)
    throw Error("cuModuleLoadDataEx (PTX JIT) failed: " + cu.describe(result) + "\nJIT log:\n" +
                    trimLog(errorLog.data()),
                ErrorKind::CudaCall);
  if (verbose)
    std::fprintf(stderr, "moejit: JIT log:\n%s\n", trimLog(infoLog.data()).c_str());
  return Module(gpu.context(), module);
}

Module Module::fromCubin(const Gpu &gpu, const std::vector<char> &cubin) {
  const CudaDriver &cu = gpu.driver();
  CUmodule module = nullptr;
  cu.call(cu.cuModuleLoadDataEx, &module, cubin.data(), 0u, nullptr, nullptr);
  return Module(gpu.context(), module);
}

std::optional<Module> Module::tryFromCubin(const Gpu &gpu, const std::vector<char> &cubin) {
  const CudaDriver &cu = gpu.driver();
  CUmodule module = nullptr;
  const CUresult result = cu.cuModuleLoadDataEx.fn(&module, cubin.data(), 0u, nullptr, nullptr);
  if (result == CUDA_SUCCESS)
    return Module(gpu.context(), module);
  if (Knobs::fromEnvironment().jitLog)
    std::fprintf(stderr,
                 "moejit: the driver refused the cached cubin (%s); JIT-compiling the PTX\n",
                 cu.describe(result).c_str());
  return std::nullopt;
}

Module::Module(Module &&other) noexcept
    : context_(std::move(other.context_)), module_(std::exchange(other.module_, nullptr)) {}

Module &Module::operator=(Module &&other) noexcept {
  if (this != &other) {
    release();
    context_ = std::move(other.context_);
    module_ = std::exchange(other.module_, nullptr);
  }
  return *this;
}

Module::~Module() { release(); }

void Module::release() noexcept {
  if (module_)
    context_->driver->cuModuleUnload.fn(module_);
  module_ = nullptr;
}

Function Module::function(const std::string &name) const {
  const CudaDriver &cu = *context_->driver;
  CUfunction function = nullptr;
  CUresult result = cu.cuModuleGetFunction.fn(&function, module_, name.c_str());
  if (result == CUDA_ERROR_NOT_FOUND)
    throw Error("the compiled module has no kernel named '" + name + "'");
  cu.check(result, "cuModuleGetFunction");
  return Function(context_, function, name);
}

Function::Function(DeviceContextRef context, CUfunction function, std::string name)
    : context_(std::move(context)), function_(function), name_(std::move(name)) {}

void Function::reserveDynamicShared(unsigned bytes) {
  if (bytes <= dynamicSharedLimit_)
    return;
  const CudaDriver &cu = *context_->driver;
  CUresult result = cu.cuFuncSetAttribute.fn(
      function_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(bytes));
  if (result != CUDA_SUCCESS)
    throw Error("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES = " + std::to_string(bytes) +
                    ") for kernel '" + name_ + "' failed: " + cu.describe(result),
                ErrorKind::CudaCall);
  dynamicSharedLimit_ = bytes;
}

unsigned Function::residentClusters(const LaunchShape &shape) {
  if (residentClusters_ != 0)
    return residentClusters_;
  const CudaDriver &cu = *context_->driver;
  CUlaunchAttribute attribute{};
  attribute.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  attribute.value.clusterDim.x = shape.cluster;
  attribute.value.clusterDim.y = 1;
  attribute.value.clusterDim.z = 1;
  CUlaunchConfig config{};
  config.gridDimX = shape.cluster;
  config.gridDimY = config.gridDimZ = 1;
  config.blockDimX = shape.block[0];
  config.blockDimY = shape.block[1];
  config.blockDimZ = shape.block[2];
  config.sharedMemBytes = shape.sharedBytes;
  config.attrs = &attribute;
  config.numAttrs = 1;
  int clusters = 0;
  CUresult result = cu.cuOccupancyMaxActiveClusters.fn(&clusters, function_, &config);
  if (result != CUDA_SUCCESS || clusters <= 0) {
    // The grid stays as launchShape sized it (one CTA per SM): correct, if
    // slower should some clusters have to wait. The launch itself reports a
    // cluster that can never fit.
    std::fprintf(stderr,
                 "moejit: cuOccupancyMaxActiveClusters of '%s' (clusters of %u) %s; keeping the "
                 "grid of one CTA per SM\n",
                 name_.c_str(), shape.cluster,
                 result != CUDA_SUCCESS ? cu.describe(result).c_str() : "says none fits");
    residentClusters_ = std::numeric_limits<unsigned>::max() / 8;
    return residentClusters_;
  }
  residentClusters_ = static_cast<unsigned>(clusters);
  return residentClusters_;
}

namespace {

// Encodes a tensor map over the device matrix at `address` in the layout
// the Hopper stages use: the 128B swizzle wgmma's descriptors read, and
// elements outside the tensor (N, K and row tails) arriving as zeros.
// `dims` fastest first, `strides` in bytes of dims 1.., `box` per load.
template <size_t Rank>
CUresult encodeStageMap(const CudaDriver &cu, CUtensorMap &map, DType dtype, CUdeviceptr address,
                        const std::array<uint64_t, Rank> &dims,
                        const std::array<uint64_t, Rank - 1> &strides,
                        const std::array<uint32_t, Rank> &box) {
  cuuint64_t globalDims[Rank], globalStrides[Rank - 1];
  cuuint32_t boxDims[Rank], elementStrides[Rank];
  for (size_t i = 0; i < Rank; ++i) {
    globalDims[i] = dims[i];
    boxDims[i] = box[i];
    elementStrides[i] = 1;
    if (i + 1 < Rank)
      globalStrides[i] = strides[i];
  }
  const CUtensorMapDataType type =
      dtype == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return cu.cuTensorMapEncodeTiled.fn(
      &map, type, Rank, reinterpret_cast<void *>(static_cast<uintptr_t>(address)), globalDims,
      globalStrides, boxDims, elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

} // namespace

void setWeightMap(const CudaDriver &cu, const GemmProblem &problem, const Target &target,
                  KernelArgs &args) {
  args.weightMap = CUtensorMap{};
  if (!usesWeightTma(problem, target))
    return;
  const WeightMapShape shape = weightMapShape(problem);
  const CUresult result = encodeStageMap<3>(cu, args.weightMap, problem.dtype, args.b, shape.dims,
                                            shape.strideBytes, shape.box);
  if (result != CUDA_SUCCESS)
    throw Error("cuTensorMapEncodeTiled for the weights of '" + problem.kernelName + "' (B at 0x" +
                    fmt::format("{:x}", args.b) + ", " + std::to_string(problem.experts) +
                    " experts of " + std::to_string(problem.k) + " x " + std::to_string(problem.n) +
                    ") failed: " + cu.describe(result),
                ErrorKind::CudaCall);
}

namespace {

void setOutputMap(const CudaDriver &cu, const GemmProblem &problem, KernelArgs &args, bool aux) {
  CUtensorMap &map = aux ? args.auxMap : args.outputMap;
  const CUdeviceptr address = aux ? args.auxOut : args.c;
  map = CUtensorMap{};
  if (address == 0)
    return;
  const OutputMapShape shape = outputMapShape(problem, args.totalRows, aux);
  const CUresult result = encodeStageMap<2>(cu, map, problem.dtype, address, shape.dims,
                                            {shape.strideBytes}, shape.box);
  if (result != CUDA_SUCCESS)
    throw Error("cuTensorMapEncodeTiled for the " + std::string(aux ? "aux_out" : "C") +
                    " output of '" + problem.kernelName + "' (at 0x" +
                    fmt::format("{:x}", address) + ", " + std::to_string(args.totalRows) +
                    " rows of " + std::to_string(shape.dims[0]) +
                    ") failed: " + cu.describe(result),
                ErrorKind::CudaCall);
}

} // namespace

void setLaunchMaps(const CudaDriver &cu, const GemmProblem &problem, const Target &target,
                   KernelArgs &args) {
  args.activationMap = CUtensorMap{};
  args.outputMap = CUtensorMap{};
  args.auxMap = CUtensorMap{};
  if (usesOutputTma(problem, target)) {
    setOutputMap(cu, problem, args, /*aux=*/false);
    if (problem.epilogue == Epilogue::ActForward)
      setOutputMap(cu, problem, args, /*aux=*/true);
  }
  if (!usesActivationTma(problem, target))
    return;
  const ActivationMapShape shape = activationMapShape(problem, args.totalRows);
  const CUresult result = encodeStageMap<2>(cu, args.activationMap, problem.dtype, args.a,
                                            shape.dims, {shape.strideBytes}, shape.box);
  if (result != CUDA_SUCCESS)
    throw Error("cuTensorMapEncodeTiled for the activations of '" + problem.kernelName +
                    "' (A at 0x" + fmt::format("{:x}", args.a) + ", " +
                    std::to_string(args.totalRows) + " rows of " + std::to_string(problem.k) +
                    ") failed: " + cu.describe(result),
                ErrorKind::CudaCall);
}

void WeightMapCache::set(const CudaDriver &cu, const GemmProblem &problem, const Target &target,
                         KernelArgs &args) const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  if (!state_->valid || state_->b != args.b) {
    setWeightMap(cu, problem, target, args);
    state_->map = args.weightMap;
    state_->b = args.b;
    state_->valid = true;
    return;
  }
  args.weightMap = state_->map;
}

unsigned persistentGridCap(Function &function, const LaunchShape &shape) {
  if (!shape.persistent || shape.cluster <= 1)
    return std::numeric_limits<unsigned>::max();
  return function.residentClusters(shape) * shape.cluster;
}

void launchKernel(Function &function, const LaunchShape &shape, const KernelArgs &args,
                  const Stream &stream) {
  for (unsigned extent : shape.grid)
    if (extent == 0)
      return;
  function.reserveDynamicShared(shape.sharedBytes);
  std::array<unsigned, 3> grid = shape.grid;
  grid[0] = std::min(grid[0], persistentGridCap(function, shape));
  // Pointer slots are passed as 64-bit values; CUdeviceptr is exactly that.
  static_assert(sizeof(CUdeviceptr) == sizeof(void *));
  KernelArgs values = args;
  void *params[] = {&values.a,
                    &values.b,
                    &values.c,
                    &values.auxIn,
                    &values.auxOut,
                    &values.offsets,
                    &values.gather,
                    &values.scale,
                    &values.totalRows,
                    &values.weightMap,
                    &values.activationMap,
                    &values.outputMap,
                    &values.auxMap};
  static_assert(std::size(params) == static_cast<size_t>(KernelArg::Count));
  const CudaDriver &cu = function.driver();
  CUresult result = cu.cuLaunchKernel.fn(function.handle(), grid[0], grid[1], grid[2],
                                         shape.block[0], shape.block[1], shape.block[2],
                                         shape.sharedBytes, stream.handle(), params, nullptr);
  if (result != CUDA_SUCCESS)
    throw Error("cuLaunchKernel of '" + function.name() + "' (grid " + std::to_string(grid[0]) +
                    "x" + std::to_string(grid[1]) + "x" + std::to_string(grid[2]) + ", block " +
                    std::to_string(shape.block[0]) + ", " + std::to_string(shape.sharedBytes) +
                    " B shared) failed: " + cu.describe(result),
                ErrorKind::CudaCall);
}

} // namespace moejit

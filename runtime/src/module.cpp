#include "runtime/src/module.h"

#include <fmt/format.h>

#include <cstring>
#include <utility>

namespace moejit {

namespace {

// Frees a CUlinkState on every path (the cubin it returns lives in the state).
class LinkState {
public:
  explicit LinkState(const CudaDriver &driver) : driver_(driver) {}
  LinkState(const LinkState &) = delete;
  LinkState &operator=(const LinkState &) = delete;
  ~LinkState() {
    if (state_)
      driver_.cuLinkDestroy.fn(state_);
  }
  CUlinkState *out() { return &state_; }
  CUlinkState get() const { return state_; }

private:
  const CudaDriver &driver_;
  CUlinkState state_ = nullptr;
};

std::string trimLog(const char *log) {
  std::string text(log);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0'))
    text.pop_back();
  return text;
}

} // namespace

std::vector<char> linkPtxToCubin(const Gpu &gpu, std::string_view ptx) {
  const CudaDriver &cu = gpu.driver();
  constexpr size_t kLogBytes = 16 * 1024;
  std::vector<char> errorLog(kLogBytes, '\0');
  std::vector<char> infoLog(kLogBytes, '\0');
  CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                            CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {errorLog.data(), reinterpret_cast<void *>(kLogBytes - 1), infoLog.data(),
                    reinterpret_cast<void *>(kLogBytes - 1)};

  LinkState link(cu);
  cu.call(cu.cuLinkCreate, 4u, options, values, link.out());
  // The driver reads the PTX as a NUL-terminated string.
  std::string text(ptx);
  CUresult added = cu.cuLinkAddData.fn(link.get(), CU_JIT_INPUT_PTX, text.data(), text.size() + 1,
                                       "moejit.ptx", 0u, nullptr, nullptr);
  void *cubin = nullptr;
  size_t cubinBytes = 0;
  CUresult result = added;
  if (result == CUDA_SUCCESS)
    result = cu.cuLinkComplete.fn(link.get(), &cubin, &cubinBytes);
  if (result != CUDA_SUCCESS)
    throw Error(std::string(added == CUDA_SUCCESS ? "cuLinkComplete" : "cuLinkAddData") +
                    " failed: " + cu.describe(result) + "\nJIT log:\n" + trimLog(errorLog.data()),
                ErrorKind::CudaCall);
  const char *bytes = static_cast<const char *>(cubin);
  return std::vector<char>(bytes, bytes + cubinBytes);
}

Module Module::fromPtx(const Gpu &gpu, std::string_view ptx) {
  return fromCubin(gpu, linkPtxToCubin(gpu, ptx));
}

Module Module::fromCubin(const Gpu &gpu, const std::vector<char> &cubin) {
  const CudaDriver &cu = gpu.driver();
  CUmodule module = nullptr;
  cu.call(cu.cuModuleLoadDataEx, &module, cubin.data(), 0u, nullptr, nullptr);
  return Module(gpu.context(), module);
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

void setWeightMap(const CudaDriver &cu, const GemmProblem &problem, const Target &target,
                  KernelArgs &args) {
  args.weightMap = CUtensorMap{};
  if (!usesWeightTma(problem, target))
    return;
  const WeightMapShape shape = weightMapShape(problem);
  const cuuint64_t dims[3] = {shape.dims[0], shape.dims[1], shape.dims[2]};
  const cuuint64_t strides[2] = {shape.strideBytes[0], shape.strideBytes[1]};
  const cuuint32_t box[3] = {shape.box[0], shape.box[1], shape.box[2]};
  const cuuint32_t elementStrides[3] = {1, 1, 1};
  const CUtensorMapDataType type = problem.dtype == DType::BF16
                                       ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                       : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  // The 128B swizzle is the layout wgmma's descriptors read; elements
  // outside the tensor (N and K tails) arrive as zeros.
  const CUresult result = cu.cuTensorMapEncodeTiled.fn(
      &args.weightMap, type, 3, reinterpret_cast<void *>(static_cast<uintptr_t>(args.b)), dims,
      strides, box, elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS)
    throw Error("cuTensorMapEncodeTiled for the weights of '" + problem.kernelName + "' (B at 0x" +
                    fmt::format("{:x}", args.b) + ", " + std::to_string(problem.experts) +
                    " experts of " + std::to_string(problem.k) + " x " +
                    std::to_string(problem.n) + ") failed: " + cu.describe(result),
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

void launchKernel(Function &function, const LaunchShape &shape, const KernelArgs &args,
                  const Stream &stream) {
  for (unsigned extent : shape.grid)
    if (extent == 0)
      return;
  function.reserveDynamicShared(shape.sharedBytes);
  // Pointer slots are passed as 64-bit values; CUdeviceptr is exactly that.
  static_assert(sizeof(CUdeviceptr) == sizeof(void *));
  KernelArgs values = args;
  void *params[] = {&values.a,      &values.b,      &values.c,
                    &values.auxIn,  &values.auxOut, &values.offsets,
                    &values.gather, &values.scale,  &values.totalRows,
                    &values.weightMap};
  static_assert(std::size(params) == static_cast<size_t>(KernelArg::Count));
  const CudaDriver &cu = function.driver();
  CUresult result = cu.cuLaunchKernel.fn(
      function.handle(), shape.grid[0], shape.grid[1], shape.grid[2], shape.block[0],
      shape.block[1], shape.block[2], shape.sharedBytes, stream.handle(), params, nullptr);
  if (result != CUDA_SUCCESS)
    throw Error("cuLaunchKernel of '" + function.name() + "' (grid " +
                    std::to_string(shape.grid[0]) + "x" + std::to_string(shape.grid[1]) + "x" +
                    std::to_string(shape.grid[2]) + ", block " + std::to_string(shape.block[0]) +
                    ", " + std::to_string(shape.sharedBytes) +
                    " B shared) failed: " + cu.describe(result),
                ErrorKind::CudaCall);
}

} // namespace moejit

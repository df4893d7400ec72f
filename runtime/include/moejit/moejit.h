// The embeddable moejit runtime: the one header a host application includes.
//
//   moejit::Runtime runtime;                       // cache dir, strict mode, target from knobs
//   moejit::Spec spec = runtime.parseSpec(text);   // throws moejit::Error with diagnostics
//   moejit::LayerKernels kernels = runtime.kernels(spec.layers[0]);
//   kernels[moejit::GemmKind::UpProj].launch(args, stream);   // asynchronous
//   moejit::MoeLayer layer = runtime.layer(spec.layers[0]); // the whole forward
//   layer.forward(forwardArgs, stream);                      // asynchronous
//
// Kernels are compiled once per configuration (never per token count) and
// kept in a two-level cache (docs/cache.md); a second process starts warm
// from the disk. No MLIR, LLVM or CUDA type appears here: device pointers are
// `void *` and a CUDA stream (CUstream or cudaStream_t) is an opaque `void *`.
//
// Errors: every failure throws moejit::Error (moejit/error.h); its kind()
// tells a missing GPU and failed driver calls apart. Destructors never throw.
// Thread safety: a Runtime, LayerKernels, GroupedGemm and MoeLayer may be
// used from any number of threads at once.
#pragma once

#include "moejit/diagnostics.h"
#include "moejit/dsl.h"
#include "moejit/error.h"
#include "moejit/spec.h"
#include "moejit/version.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moejit {

namespace detail {
struct RuntimeState;
struct LoadedGemm;
struct DeviceMemoryState;
struct StreamState;
struct LoadedMoeLayer;
} // namespace detail

// Parses and checks .moe text for `target`. Throws Error whose message is the
// rendered diagnostics (file:line:col, the source line, a hint). Open
// schedules come from `tuned` when given (moejit/dsl.h, ScheduleSource).
Spec parseSpecText(std::string_view text, const Target &target,
                   std::string_view filename = "<text>", const ScheduleSource *tuned = nullptr);
// Reads and parses a .moe file. Throws Error when unreadable or invalid.
Spec parseSpecFile(const std::string &path, const Target &target,
                   const ScheduleSource *tuned = nullptr);
// Completes a Spec built in C++ (default schedules and GEMM set) and checks
// it for `target`. Throws Error with the diagnostics.
void resolveSpecOrThrow(Spec &spec, const Target &target, const ScheduleSource *tuned = nullptr);

// The kernel parameters of a launch (docs/kernel-abi.md), as device pointers.
// Which pointers a GEMM needs: GroupedGemm::operands(). Matrices (a, b, c,
// auxIn, auxOut) must be 16-byte aligned, the int32/float vectors 4-byte.
struct GemmArgs {
  const void *a = nullptr;
  const void *b = nullptr;
  void *c = nullptr;
  const void *auxIn = nullptr;
  void *auxOut = nullptr;
  const int32_t *offsets = nullptr; // E+1 prefix offsets of the grouped rows
  const int32_t *gather = nullptr;  // token row of each grouped row
  const float *scale = nullptr;     // router score of each grouped row
  int64_t totalRows = 0;            // R = offsets[E]; 0 .. INT32_MAX
};

// The optional operands a GEMM reads or writes (a, b and offsets always).
struct GemmOperands {
  // C: always, except for the forward activation epilogue with an
  // activation: H is then optional (null: only act(H) is written, what an
  // inference forward needs).
  bool c = true;
  bool auxIn = false;
  bool auxOut = false;
  bool gather = false;
  bool scale = false;
};

// One compiled grouped GEMM, loaded on the runtime's GPU. Cheap to copy;
// keeps its module loaded.
class GroupedGemm {
public:
  GemmKind kind() const;
  const std::string &kernelName() const;
  GemmOperands operands() const;
  // Validates `args` (a null operand that the GEMM needs, a misaligned
  // pointer, totalRows < 0 or over INT32_MAX: Error naming the argument),
  // then enqueues the kernel on `stream` (a CUstream / cudaStream_t of the
  // runtime's device; nullptr is the legacy default stream) and returns.
  void launch(const GemmArgs &args, void *stream) const;

private:
  friend struct detail::RuntimeState;
  explicit GroupedGemm(std::shared_ptr<const detail::LoadedGemm> gemm) : gemm_(std::move(gemm)) {}
  std::shared_ptr<const detail::LoadedGemm> gemm_;
};

// The grouped GEMMs of one layer, one per GemmKind of the layer's spec.
class LayerKernels {
public:
  const std::string &layerName() const { return layerName_; }
  const std::vector<GroupedGemm> &gemms() const { return gemms_; }
  bool has(GemmKind kind) const;
  // Throws Error when the layer has no such GEMM.
  const GroupedGemm &operator[](GemmKind kind) const;

private:
  friend struct detail::RuntimeState;
  std::string layerName_;
  std::vector<GroupedGemm> gemms_;
};

struct ForwardOptions {
  // Tile-aware token rounding with the spec's mode (nearest when the spec
  // names none); needs a layer obtained with withRounding. Off: plain top-K,
  // the default for inference.
  bool tokenRounding = false;
  // Keep H [rows][u] for a later backward: in ForwardArgs::h when given, else
  // in the workspace.
  bool keepH = false;
};

// The device pointers of one layer forward. Matrices are row-major, in the
// layer's dtype unless said otherwise, and 16-byte aligned.
struct ForwardArgs {
  const void *x = nullptr;             // X [T][d]
  const void *routerWeights = nullptr; // Wr [d][E]: logits = X Wr ...
  const float *routerLogits = nullptr; // ... or fp32 logits [T][E] (exactly one of the two)
  const void *w1 = nullptr;            // [E][d][u], u = 2n for gated activations, else n
  const void *w2 = nullptr;            // [E][n][d]
  void *out = nullptr;                 // O [T][d]
  int64_t tokens = 0;                  // T
  void *workspace = nullptr;           // 256-byte aligned
  size_t workspaceBytes = 0;           // at least MoeLayer::workspaceBytes(T, options)
  void *h = nullptr;                   // optional: H [maxGroupedRows][u] when options.keepH
  ForwardOptions options;
};

// The forward of one MoE layer on the runtime's GPU: router, top-K (and
// token rounding), permutation, up-projection with the activation,
// down-projection with the router scores, aggregation (docs/layer.md).
// Cheap to copy; keeps its kernels loaded.
class MoeLayer {
public:
  const std::string &layerName() const;
  // The workspace a forward of `tokens` tokens needs with `options`. Throws
  // Error for T < 0, T*K over 2^31-1, or rounding on a layer built without it.
  size_t workspaceBytes(int64_t tokens, const ForwardOptions &options = {}) const;
  // Validates `args` (Error naming the first bad argument: a null or
  // misaligned pointer, both or neither router input, a workspace too small),
  // then enqueues the whole forward on `stream` (a CUstream / cudaStream_t of
  // the runtime's device; nullptr is the legacy default stream) and returns:
  // no allocation, no host synchronization.
  void forward(const ForwardArgs &args, void *stream) const;

private:
  friend struct detail::RuntimeState;
  explicit MoeLayer(std::shared_ptr<const detail::LoadedMoeLayer> layer)
      : layer_(std::move(layer)) {}
  std::shared_ptr<const detail::LoadedMoeLayer> layer_;
};

// Owned device memory on the runtime's GPU, for hosts without the CUDA
// toolkit (tests, examples). Move-only.
class DeviceMemory {
public:
  DeviceMemory() noexcept;
  DeviceMemory(DeviceMemory &&) noexcept;
  DeviceMemory &operator=(DeviceMemory &&) noexcept;
  ~DeviceMemory();

  void *data() const;
  size_t bytes() const;
  // Synchronous whole-buffer copies; `bytes` must equal bytes().
  void upload(const void *host, size_t bytes);
  void download(void *host, size_t bytes) const;
  void fill(uint8_t byte);

private:
  friend struct detail::RuntimeState;
  std::unique_ptr<detail::DeviceMemoryState> state_;
};

// An owned CUDA stream on the runtime's GPU. Move-only.
class CudaStream {
public:
  CudaStream() noexcept;
  CudaStream(CudaStream &&) noexcept;
  CudaStream &operator=(CudaStream &&) noexcept;
  ~CudaStream();

  void *handle() const; // the CUstream, for GroupedGemm::launch
  void synchronize() const;

private:
  friend struct detail::RuntimeState;
  std::unique_ptr<detail::StreamState> state_;
};

struct RuntimeOptions {
  // The kernel cache directory. Unset: MOEJIT_CACHE_DIR, else
  // $XDG_CACHE_HOME/moejit, else ~/.cache/moejit. Empty: memory only.
  std::optional<std::string> cacheDir;
  // Strict mode (a cache miss is an error, never a compile). Unset:
  // MOEJIT_STRICT. A runtime built without the compiler is always strict.
  std::optional<bool> strict;
  // Target arch (sm_80, sm_90a, ...). Empty: MOEJIT_ARCH, else the GPU's,
  // else sm_90a. The SM count is the GPU's when there is one.
  std::string arch;
  // The target's SM count (part of every kernel's cache key), 1 to 1024.
  // 0: the GPU's, else an H100 SXM's 132. For filling a cache without the
  // GPU it is for (an H100 PCIe has 114).
  int smCount = 0;
  // The CUDA driver library to dlopen. Empty: MOEJIT_CUDA_DRIVER or libcuda.so.1.
  std::string cudaDriver;
  int device = 0;
  uint64_t cacheMaxBytes = 1ull << 30; // disk size limit; 0: none
  // The tuning database (`moejit tune`, docs/tuning.md) whose schedules the
  // GEMMs take where a spec leaves theirs open. Unset: MOEJIT_TUNING_DB.
  // Empty: none. A database that cannot be read makes the constructor throw.
  std::optional<std::string> tuningDb;
};

struct RuntimeStats {
  // The kernel cache of this runtime (this process).
  uint64_t memoryHits = 0;
  uint64_t diskHits = 0;
  uint64_t misses = 0;
  uint64_t compiles = 0;
  uint64_t discarded = 0; // bad disk entries met and rebuilt
  // Modules loaded on the GPU, and of those, how many were JIT-compiled from
  // PTX by the driver: the others came from the cubin that ptxas assembled
  // when the module was compiled (MOEJIT_PTXAS; docs/cache.md).
  uint64_t modulesLoaded = 0;
  uint64_t ptxLinks = 0;
};

class Runtime {
public:
  // Needs no GPU: parse, precompile and the cache work without one; the GPU
  // is opened on first use (kernels, allocate, createStream).
  explicit Runtime(RuntimeOptions options = {});
  Runtime(Runtime &&) noexcept;
  Runtime &operator=(Runtime &&) noexcept;
  ~Runtime();

  const Target &target() const;
  bool strict() const;
  bool hasCompiler() const; // false for the cache-only runtime library
  // The cache directory in use; empty when the cache is memory only.
  std::string cacheDirectory() const;
  // True when a GPU can be opened (opens it).
  bool hasGpu() const;

  // parseSpecText / parseSpecFile / resolveSpecOrThrow for target(), open
  // schedules from the tuning database (RuntimeOptions::tuningDb).
  Spec parseSpec(std::string_view text, std::string_view filename = "<text>") const;
  Spec readSpec(const std::string &path) const;
  void resolve(Spec &spec) const;

  // The layer's grouped GEMMs, compiled through the cache and loaded on the
  // GPU. Concurrent calls for one layer compile and load it once. Throws
  // Error(NoGpu) without a GPU; in strict mode a cache miss throws.
  LayerKernels kernels(const LayerSpec &layer);
  // Fills the cache with the layer's module for target(); needs no GPU.
  // Returns true when it compiled, false when the cache had it.
  bool precompile(const LayerSpec &layer);
  // The layer's forward: its up_proj and down_proj compiled through the
  // cache as one module, its routing kernels compiled with NVRTC (dlopen'ed;
  // with `withRounding` also the token-rounding ones), all loaded on the GPU.
  // Concurrent calls for one layer build it once. Throws Error(NoGpu)
  // without a GPU, Error when the layer lacks up_proj or down_proj or NVRTC
  // cannot be loaded; in strict mode a cache miss throws.
  MoeLayer layer(const LayerSpec &layer, bool withRounding = false);

  DeviceMemory allocate(size_t bytes) const;
  CudaStream createStream() const;

  RuntimeStats stats() const;

private:
  std::unique_ptr<detail::RuntimeState> state_;
};

} // namespace moejit

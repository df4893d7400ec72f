// One GPU and the RAII handles of what lives on it: device memory, streams,
// events. Handles are move-only and their destructors never throw; each keeps
// the device context (and so the driver library) alive.
#pragma once

#include "runtime/src/cuda_driver.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace moejit {

struct DeviceProperties {
  std::string name;
  int ordinal = 0;
  int computeMajor = 0, computeMinor = 0;
  int smCount = 0;
  int maxSharedBytesPerBlockOptin = 0;
  size_t totalMemoryBytes = 0;
};

// The driver, one device and its retained primary context.
struct DeviceContext {
  std::shared_ptr<const CudaDriver> driver;
  CUdevice device = 0;
  CUcontext context = nullptr;
  DeviceProperties properties;

  DeviceContext() = default;
  DeviceContext(const DeviceContext &) = delete;
  DeviceContext &operator=(const DeviceContext &) = delete;
  ~DeviceContext();
};
using DeviceContextRef = std::shared_ptr<const DeviceContext>;

class Stream;

class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceContextRef context, size_t bytes); // 0 bytes: a null buffer
  DeviceBuffer(DeviceBuffer &&other) noexcept;
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
  ~DeviceBuffer();

  CUdeviceptr pointer() const { return pointer_; }
  size_t bytes() const { return bytes_; }

  // Synchronous copies of the whole buffer (sizes must match).
  void upload(const void *host, size_t bytes);
  void download(void *host, size_t bytes) const;
  template <class T> void upload(std::span<const T> host) {
    upload(host.data(), host.size_bytes());
  }
  template <class T> void download(std::span<T> host) const {
    download(host.data(), host.size_bytes());
  }
  // Blocking: the fill is complete on the device when this returns.
  void fillBytes(uint8_t value);
  void fillBytesAsync(uint8_t value, const Stream &stream);

private:
  void release() noexcept;

  DeviceContextRef context_;
  CUdeviceptr pointer_ = 0;
  size_t bytes_ = 0;
};

class Stream {
public:
  explicit Stream(DeviceContextRef context);
  // A stream the caller owns (a CUstream of `context`'s device, or nullptr
  // for the legacy default stream): used, never destroyed.
  static Stream borrow(DeviceContextRef context, CUstream handle);
  Stream(Stream &&other) noexcept;
  Stream &operator=(Stream &&other) noexcept;
  ~Stream();

  CUstream handle() const { return stream_; }
  void synchronize() const;

private:
  Stream(DeviceContextRef context, CUstream handle, bool owned)
      : context_(std::move(context)), stream_(handle), owned_(owned) {}
  void release() noexcept;

  DeviceContextRef context_;
  CUstream stream_ = nullptr;
  bool owned_ = true;
};

class Event {
public:
  explicit Event(DeviceContextRef context);
  Event(Event &&other) noexcept;
  Event &operator=(Event &&other) noexcept;
  ~Event();

  void record(const Stream &stream);
  void synchronize() const;
  // Milliseconds from `start` to this event (both recorded and complete).
  float millisecondsSince(const Event &start) const;

private:
  void release() noexcept;

  DeviceContextRef context_;
  CUevent event_ = nullptr;
};

class Module;

// A GPU: loads the driver (through `driverLibrary`) and retains the primary
// context of device `ordinal`, which it makes current on the calling thread.
// Copies share the context. Throws Error(NoGpu) without a driver or device.
class Gpu {
public:
  explicit Gpu(const std::string &driverLibrary = "libcuda.so.1", int ordinal = 0);

  const CudaDriver &driver() const { return *context_->driver; }
  const DeviceProperties &properties() const { return context_->properties; }
  const DeviceContextRef &context() const { return context_; }

  // Makes the context current on the calling thread (the constructor does it
  // for the constructing thread).
  void makeCurrent() const;
  void synchronize() const;

  DeviceBuffer allocate(size_t bytes) const { return DeviceBuffer(context_, bytes); }
  Stream createStream() const { return Stream(context_); }
  Event createEvent() const { return Event(context_); }

private:
  DeviceContextRef context_;
};

} // namespace moejit

#include "runtime/src/device.h"

#include <utility>

namespace moejit {

DeviceContext::~DeviceContext() {
  if (context)
    driver->cuDevicePrimaryCtxRelease.fn(device);
}

Gpu::Gpu(const std::string &driverLibrary, int ordinal) {
  auto context = std::make_shared<DeviceContext>();
  context->driver = CudaDriver::load(driverLibrary);
  const CudaDriver &cu = *context->driver;

  int count = 0;
  cu.call(cu.cuDeviceGetCount, &count);
  if (count == 0)
    throw Error("the CUDA driver reports no GPU: moejit can parse and compile here but "
                "needs an NVIDIA GPU to run",
                ErrorKind::NoGpu);
  if (ordinal < 0 || ordinal >= count)
    throw Error("GPU " + std::to_string(ordinal) + " does not exist (the driver reports " +
                std::to_string(count) + ")");
  cu.call(cu.cuDeviceGet, &context->device, ordinal);

  DeviceProperties &props = context->properties;
  props.ordinal = ordinal;
  char name[256] = {};
  cu.call(cu.cuDeviceGetName, name, static_cast<int>(sizeof name - 1), context->device);
  props.name = name;
  auto attribute = [&](CUdevice_attribute which) {
    int value = 0;
    cu.call(cu.cuDeviceGetAttribute, &value, which, context->device);
    return value;
  };
  props.computeMajor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  props.computeMinor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  props.smCount = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  props.maxSharedBytesPerBlockOptin =
      attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  cu.call(cu.cuDeviceTotalMem, &props.totalMemoryBytes, context->device);

  cu.call(cu.cuDevicePrimaryCtxRetain, &context->context, context->device);
  context_ = std::move(context);
  makeCurrent();
}

void Gpu::makeCurrent() const { driver().call(driver().cuCtxSetCurrent, context_->context); }

void Gpu::synchronize() const { driver().call(driver().cuCtxSynchronize); }

// DeviceBuffer ---------------------------------------------------------------

DeviceBuffer::DeviceBuffer(DeviceContextRef context, size_t bytes)
    : context_(std::move(context)), bytes_(bytes) {
  if (bytes > 0)
    context_->driver->call(context_->driver->cuMemAlloc, &pointer_, bytes);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer &&other) noexcept
    : context_(std::move(other.context_)), pointer_(std::exchange(other.pointer_, 0)),
      bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
  if (this != &other) {
    release();
    context_ = std::move(other.context_);
    pointer_ = std::exchange(other.pointer_, 0);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { release(); }

void DeviceBuffer::release() noexcept {
  if (pointer_)
    context_->driver->cuMemFree.fn(pointer_);
  pointer_ = 0;
  bytes_ = 0;
}

namespace {
void checkCopySize(size_t buffer, size_t host) {
  if (buffer != host)
    throw Error("device copy of " + std::to_string(host) + " bytes into/from a buffer of " +
                std::to_string(buffer) + " bytes");
}
} // namespace

void DeviceBuffer::upload(const void *host, size_t bytes) {
  checkCopySize(bytes_, bytes);
  if (bytes > 0)
    context_->driver->call(context_->driver->cuMemcpyHtoD, pointer_, host, bytes);
}

void DeviceBuffer::download(void *host, size_t bytes) const {
  checkCopySize(bytes_, bytes);
  if (bytes > 0)
    context_->driver->call(context_->driver->cuMemcpyDtoH, host, pointer_, bytes);
}

void DeviceBuffer::fillBytes(uint8_t value) {
  if (bytes_ == 0)
    return;
  // cuMemsetD8 may return before the device has finished; a caller of the
  // blocking fill then launching on a non-blocking stream would race with it.
  context_->driver->call(context_->driver->cuMemsetD8, pointer_, value, bytes_);
  context_->driver->call(context_->driver->cuCtxSynchronize);
}

void DeviceBuffer::fillBytesAsync(uint8_t value, const Stream &stream) {
  if (bytes_ > 0)
    context_->driver->call(context_->driver->cuMemsetD8Async, pointer_, value, bytes_,
                           stream.handle());
}

// Stream ---------------------------------------------------------------------

Stream::Stream(DeviceContextRef context) : context_(std::move(context)) {
  context_->driver->call(context_->driver->cuStreamCreate, &stream_, CU_STREAM_NON_BLOCKING);
}

Stream Stream::borrow(DeviceContextRef context, CUstream handle) {
  return Stream(std::move(context), handle, false);
}

Stream::Stream(Stream &&other) noexcept
    : context_(std::move(other.context_)), stream_(std::exchange(other.stream_, nullptr)),
      owned_(other.owned_) {}

Stream &Stream::operator=(Stream &&other) noexcept {
  if (this != &other) {
    release();
    context_ = std::move(other.context_);
    stream_ = std::exchange(other.stream_, nullptr);
    owned_ = other.owned_;
  }
  return *this;
}

Stream::~Stream() { release(); }

void Stream::release() noexcept {
  if (stream_ && owned_)
    context_->driver->cuStreamDestroy.fn(stream_);
  stream_ = nullptr;
}

void Stream::synchronize() const {
  context_->driver->call(context_->driver->cuStreamSynchronize, stream_);
}

// Event ----------------------------------------------------------------------

Event::Event(DeviceContextRef context) : context_(std::move(context)) {
  context_->driver->call(context_->driver->cuEventCreate, &event_, CU_EVENT_DEFAULT);
}

Event::Event(Event &&other) noexcept
    : context_(std::move(other.context_)), event_(std::exchange(other.event_, nullptr)) {}

Event &Event::operator=(Event &&other) noexcept {
  if (this != &other) {
    release();
    context_ = std::move(other.context_);
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

Event::~Event() { release(); }

void Event::release() noexcept {
  if (event_)
    context_->driver->cuEventDestroy.fn(event_);
  event_ = nullptr;
}

void Event::record(const Stream &stream) {
  context_->driver->call(context_->driver->cuEventRecord, event_, stream.handle());
}

void Event::synchronize() const {
  context_->driver->call(context_->driver->cuEventSynchronize, event_);
}

float Event::millisecondsSince(const Event &start) const {
  float ms = 0;
  context_->driver->call(context_->driver->cuEventElapsedTime, &ms, start.event_, event_);
  return ms;
}

} // namespace moejit

// The error model of moejit's C++ API: one exception type.
#pragma once

#include <stdexcept>
#include <string>

namespace moejit {

// What a caller may want to branch on; the message says the rest.
enum class ErrorKind {
  Failed,   // anything else (bad input, I/O, a failed compile)
  NoGpu,    // no CUDA driver library, or a driver without a usable device
  CudaCall, // a CUDA driver call returned an error
};

class Error : public std::runtime_error {
public:
  explicit Error(const std::string &message, ErrorKind kind = ErrorKind::Failed)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

private:
  ErrorKind kind_;
};

} // namespace moejit

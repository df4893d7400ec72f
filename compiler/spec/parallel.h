// Splits an index range over the host's cores with std::thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace moejit {

// Calls body(begin, end) on contiguous chunks of [0, count) from up to
// hardware_concurrency threads; rethrows the first exception of a chunk.
template <class Body> void parallelFor(int64_t count, Body &&body) {
  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 64);
  const int64_t workers = std::min(threads, count);
  if (workers <= 1) {
    if (count > 0)
      body(int64_t{0}, count);
    return;
  }
  std::vector<std::exception_ptr> errors(workers);
  std::vector<std::thread> pool;
  pool.reserve(workers);
  for (int64_t w = 0; w < workers; ++w) {
    const int64_t begin = count * w / workers;
    const int64_t end = count * (w + 1) / workers;
    pool.emplace_back([&, w, begin, end] {
      try {
        body(begin, end);
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  }
  for (std::thread &t : pool)
    t.join();
  for (const std::exception_ptr &error : errors)
    if (error)
      std::rethrow_exception(error);
}

} // namespace moejit

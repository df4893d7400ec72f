// Single-flight construction of shared values by key, for the caches of
// the runtime and of the NVRTC templates.
#pragma once

#include <algorithm>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace moejit {

// Single flight by key: the first caller builds, concurrent callers wait for
// its result; a failed build is forgotten, so the next call retries.
template <class Key, class Value> class BuildOnce {
public:
  template <class Build> std::shared_ptr<const Value> get(const Key &key, Build &&build) {
    std::promise<std::shared_ptr<const Value>> promise;
    Future future;
    bool builder = false;
    {
      std::lock_guard lock(mutex_);
      auto it = std::find_if(entries_.begin(), entries_.end(),
                             [&](const auto &entry) { return entry.first == key; });
      if (it == entries_.end()) {
        entries_.emplace_back(key, promise.get_future().share());
        builder = true;
        future = entries_.back().second;
      } else {
        future = it->second;
      }
    }
    if (!builder)
      return future.get();
    try {
      std::shared_ptr<const Value> value = build();
      promise.set_value(value);
      return value;
    } catch (...) {
      promise.set_exception(std::current_exception());
      std::lock_guard lock(mutex_);
      std::erase_if(entries_, [&](const auto &entry) { return entry.first == key; });
      throw;
    }
  }

private:
  using Future = std::shared_future<std::shared_ptr<const Value>>;
  std::mutex mutex_;
  std::vector<std::pair<Key, Future>> entries_;
};

} // namespace moejit

// Shared fixtures of the cache tests: sample problems and keys, a temporary
// directory, a warning collector.
#pragma once

#include "runtime/cache/cache_entry.h"
#include "runtime/cache/cache_key.h"

#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <stdlib.h>

namespace moejit::cache_test {

inline GemmProblem sampleProblem(std::string kernelName = "moejit_test_UpProj") {
  GemmProblem p;
  p.kind = GemmKind::UpProj;
  p.dtype = DType::BF16;
  p.varlen = Varlen::M;
  p.experts = 64;
  p.n = 2048;
  p.k = 1024;
  p.aKContiguous = true;
  p.bKContiguous = false;
  p.gatherA = true;
  p.epilogue = Epilogue::ActForward;
  p.activation = Activation::SwiGLU;
  p.cColumns = 2048;
  p.auxColumns = 1024;
  p.schedule.tile = {128, 128, 64};
  p.schedule.stages = 4;
  p.kernelName = std::move(kernelName);
  return p;
}

inline CacheKeyFields sampleFields(std::string kernelName = "moejit_test_UpProj") {
  CacheKeyFields fields;
  fields.problems = {sampleProblem(std::move(kernelName))};
  fields.target = Target::fromArch("sm_90a");
  fields.moejitVersion = "0.1.0";
  fields.llvmVersion = "22.1.0";
  return fields;
}

inline CacheKey sampleKey(std::string kernelName = "moejit_test_UpProj") {
  return CacheKey(sampleFields(std::move(kernelName)));
}

inline KernelArtifact sampleArtifact(std::string ptx = "// ptx\n.visible .entry k() { ret; }\n") {
  KernelArtifact artifact;
  artifact.ptx = std::move(ptx);
  artifact.kernelNames = {"moejit_test_UpProj"};
  return artifact;
}

// A fresh directory under the system temp dir, removed with its contents.
class TempDirectory {
public:
  TempDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "moejit-cache-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data()) ? pattern : std::string();
  }
  TempDirectory(const TempDirectory &) = delete;
  TempDirectory &operator=(const TempDirectory &) = delete;
  ~TempDirectory() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string &path() const { return path_; }
  std::string sub(std::string_view name) const { return path_ + "/" + std::string(name); }

private:
  std::string path_;
};

class WarningLog {
public:
  void add(std::string_view message) {
    std::lock_guard lock(mutex_);
    messages_.emplace_back(message);
  }
  std::vector<std::string> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  bool contains(std::string_view text) const {
    for (const std::string &m : messages())
      if (m.find(text) != std::string::npos)
        return true;
    return false;
  }
  std::string joined() const {
    std::string all;
    for (const std::string &m : messages())
      all += m + "\n";
    return all;
  }

private:
  mutable std::mutex mutex_;
  std::vector<std::string> messages_;
};

} // namespace moejit::cache_test

// Shared by the API tests: a small inference layer and a scratch directory.
#pragma once

#include <filesystem>
#include <random>
#include <string>

namespace moejit::testing {

inline constexpr const char *kTinySpec = "layer tiny {\n"
                                         "  experts = 8\n"
                                         "  hidden = 256\n"
                                         "  intermediate = 128\n"
                                         "  router { top_k = 2 }\n"
                                         "  gemm up_proj {}\n"
                                         "  gemm down_proj {}\n"
                                         "}\n";

// A fresh directory under the system temp dir, removed with the object.
class ScratchDir {
public:
  ScratchDir() {
    std::random_device random;
    path_ = std::filesystem::temp_directory_path() /
            ("moejit-api-test-" + std::to_string(random()) + std::to_string(random()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir &) = delete;
  ScratchDir &operator=(const ScratchDir &) = delete;
  std::string path() const { return path_.string(); }
  std::string cache() const { return (path_ / "cache").string(); }

private:
  std::filesystem::path path_;
};

} // namespace moejit::testing

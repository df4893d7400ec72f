// Small POSIX helpers of the disk cache: an owning file descriptor, whole-file
// I/O, and a per-key lock file. Nothing here throws; failures return false or
// an empty value with errno-based text.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace moejit::cache_detail {

// Move-only owner of a file descriptor.
class UniqueFd {
public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd &&other) noexcept : fd_(other.release()) {}
  UniqueFd &operator=(UniqueFd &&other) noexcept;
  UniqueFd(const UniqueFd &) = delete;
  UniqueFd &operator=(const UniqueFd &) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() noexcept;
  // Closes now and reports close()'s error (a write error may surface here).
  bool close() noexcept;

private:
  int fd_ = -1;
};

std::string errnoText(int error);

bool writeAll(int fd, std::string_view bytes);
// Reads the whole regular file open at `fd`.
bool readAll(int fd, std::string &out);
// mkdir of `path` and its missing parents with `mode`; true when it exists.
bool makeDirectories(const std::string &path, unsigned mode, std::string &error);
// fsync of a directory, so that a rename in it survives a crash.
bool syncDirectory(const std::string &path);

// Current time as nanoseconds since the epoch (CLOCK_REALTIME).
long long nowNanoseconds();

// An exclusive flock on a lock file, released when this object goes away
// (or the process dies). acquire() re-opens when the file it locked was
// removed or replaced meanwhile, so removeLockFile() is safe against a
// concurrent acquire().
class FileLock {
public:
  static std::optional<FileLock> acquire(const std::string &path, std::string &error);

private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// Removes a lock file unless someone holds it; never blocks.
void removeLockFile(const std::string &path) noexcept;

} // namespace moejit::cache_detail

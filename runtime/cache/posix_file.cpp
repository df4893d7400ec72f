#include "runtime/cache/posix_file.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace moejit::cache_detail {

UniqueFd &UniqueFd::operator=(UniqueFd &&other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() { close(); }

int UniqueFd::release() noexcept {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

bool UniqueFd::close() noexcept {
  if (fd_ < 0)
    return true;
  const int result = ::close(release());
  return result == 0 || errno == EINTR;
}

std::string errnoText(int error) { return std::strerror(error); }

bool writeAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(written));
  }
  return true;
}

bool readAll(int fd, std::string &out) {
  struct stat info;
  if (::fstat(fd, &info) != 0)
    return false;
  out.resize(static_cast<size_t>(info.st_size));
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t got = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (got < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    if (got == 0)
      break;
    done += static_cast<size_t>(got);
  }
  out.resize(done);
  return true;
}

bool makeDirectories(const std::string &path, unsigned mode, std::string &error) {
  if (path.empty()) {
    error = "empty directory path";
    return false;
  }
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (::mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      error = "cannot create " + prefix + ": " + errnoText(errno);
      return false;
    }
    if (slash == std::string::npos)
      break;
  }
  struct stat info;
  if (::stat(path.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    error = path + " is not a directory";
    return false;
  }
  return true;
}

bool syncDirectory(const std::string &path) {
  UniqueFd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return dir && ::fsync(dir.get()) == 0;
}

long long nowNanoseconds() {
  timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec;
}

namespace {

// True when `fd` is still the file at `path` (not removed or replaced).
bool stillLinkedAt(int fd, const std::string &path) {
  struct stat opened, linked;
  return ::fstat(fd, &opened) == 0 && ::stat(path.c_str(), &linked) == 0 &&
         opened.st_dev == linked.st_dev && opened.st_ino == linked.st_ino;
}

int flockRetryingOnSignal(int fd, int operation) {
  int result;
  do
    result = ::flock(fd, operation);
  while (result != 0 && errno == EINTR);
  return result;
}

} // namespace

std::optional<FileLock> FileLock::acquire(const std::string &path, std::string &error) {
  for (;;) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) {
      error = "cannot open lock file " + path + ": " + errnoText(errno);
      return std::nullopt;
    }
    if (flockRetryingOnSignal(fd.get(), LOCK_EX) != 0) {
      error = "cannot lock " + path + ": " + errnoText(errno);
      return std::nullopt;
    }
    if (stillLinkedAt(fd.get(), path))
      return FileLock(std::move(fd));
  }
}

void removeLockFile(const std::string &path) noexcept {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd || flockRetryingOnSignal(fd.get(), LOCK_EX | LOCK_NB) != 0)
    return;
  if (stillLinkedAt(fd.get(), path))
    ::unlink(path.c_str());
}

} // namespace moejit::cache_detail

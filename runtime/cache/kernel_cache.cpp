#include "runtime/cache/kernel_cache.h"

#include "moejit/error.h"
#include "runtime/cache/posix_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <future>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

namespace moejit {

using cache_detail::FileLock;
using cache_detail::UniqueFd;

namespace {

constexpr std::string_view kEntrySuffix = ".entry";
constexpr std::string_view kLockSuffix = ".lock";
constexpr std::string_view kTempMarker = ".entry.tmp.";
// A temporary file this old belongs to a writer that died.
constexpr long long kStaleTempNanoseconds = 3600LL * 1000000000LL;

// Why a file or directory of the cache must not be trusted; empty if it may.
std::string ownershipRefusal(const struct stat &info) {
  const uid_t me = ::geteuid();
  if (info.st_uid != me)
    return fmt::format("owned by uid {}, not by this user (uid {})", info.st_uid, me);
  if (info.st_mode & (S_IWGRP | S_IWOTH))
    return fmt::format("writable by group or others (mode {:04o})", info.st_mode & 07777);
  return {};
}

std::string directoryRefusal(const std::string &path) {
  struct stat info;
  if (::lstat(path.c_str(), &info) != 0)
    return "cannot stat it: " + cache_detail::errnoText(errno);
  if (!S_ISDIR(info.st_mode))
    return "not a directory";
  return ownershipRefusal(info);
}

long long mtimeNanoseconds(const struct stat &info) {
  return static_cast<long long>(info.st_mtim.tv_sec) * 1000000000LL + info.st_mtim.tv_nsec;
}

// One entry file read and checked.
struct EntryRead {
  bool missing = false; // no such file: a plain miss
  bool refused = false; // not trusted (owner, mode): left for a rebuild to replace
  std::string problem;  // else empty when `entry` holds a valid entry
  std::optional<CacheEntry> entry;
  UniqueFd fd; // open while the caller touches or removes it
  struct stat info {};
};

EntryRead readEntryFile(const std::string &path, const CacheKey *expected) {
  EntryRead read;
  read.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!read.fd) {
    read.missing = errno == ENOENT || errno == ENOTDIR;
    read.problem = errno == ELOOP ? std::string("a symbolic link")
                                  : "cannot open it: " + cache_detail::errnoText(errno);
    return read;
  }
  if (::fstat(read.fd.get(), &read.info) != 0) {
    read.problem = "cannot stat it: " + cache_detail::errnoText(errno);
    return read;
  }
  if (!S_ISREG(read.info.st_mode)) {
    read.problem = "not a regular file";
    return read;
  }
  if (std::string refusal = ownershipRefusal(read.info); !refusal.empty()) {
    read.refused = true;
    read.problem = "refused: " + refusal;
    return read;
  }
  std::string bytes;
  if (!cache_detail::readAll(read.fd.get(), bytes)) {
    read.problem = "cannot read it: " + cache_detail::errnoText(errno);
    return read;
  }
  read.entry = decodeCacheEntry(bytes, expected, read.problem);
  if (read.entry && !expected) {
    // Without an expected key, the file's place must match the key it holds.
    const std::filesystem::path file(path);
    const std::string &key = read.entry->header.key;
    if (file.filename().string() != key + std::string(kEntrySuffix) ||
        file.parent_path().filename().string() != key.substr(0, 2)) {
      read.problem = "misplaced: it holds key " + key;
      read.entry.reset();
    }
  }
  return read;
}

// Unlinks `path` only while it is still the file open at `fd`: an entry a
// concurrent writer just replaced is left alone.
void unlinkIfSameFile(const std::string &path, const struct stat &opened) {
  struct stat linked;
  if (::lstat(path.c_str(), &linked) == 0 && linked.st_dev == opened.st_dev &&
      linked.st_ino == opened.st_ino)
    ::unlink(path.c_str());
}

std::string lockPathOf(const std::string &entryPath) {
  return entryPath.substr(0, entryPath.size() - kEntrySuffix.size()) + std::string(kLockSuffix);
}

} // namespace

struct KernelCache::Flight {
  std::promise<ArtifactPtr> promise;
  std::shared_future<ArtifactPtr> result = promise.get_future().share();
};

struct KernelCache::DiskFile {
  enum class Kind { Entry, Temp, Lock };
  Kind kind;
  std::string path;
  uint64_t bytes = 0;
  long long mtimeNs = 0;
};

KernelCacheOptions KernelCacheOptions::fromKnobs(const Knobs &knobs) {
  KernelCacheOptions options;
  options.directory = knobs.cacheDir;
  options.strict = knobs.strict;
  return options;
}

KernelCache::KernelCache(KernelCacheOptions options) : options_(std::move(options)) {
  tempNonce_ = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  if (options_.directory.empty())
    return;
  while (options_.directory.size() > 1 && options_.directory.back() == '/')
    options_.directory.pop_back();
  entriesRoot_ = options_.directory + "/v1";
  std::string error;
  if (!cache_detail::makeDirectories(entriesRoot_, 0700, error)) {
    warn("kernel cache: " + error + "; caching in memory only");
    return;
  }
  for (const std::string &dir : {options_.directory, entriesRoot_}) {
    if (std::string refusal = directoryRefusal(dir); !refusal.empty()) {
      warn("kernel cache: refusing directory " + dir + ": " + refusal +
           "; caching in memory only (set MOEJIT_CACHE_DIR to a directory of your own)");
      return;
    }
  }
  diskEnabled_ = true;
}

KernelCache::~KernelCache() = default;

void KernelCache::warn(const std::string &message) const {
  if (options_.warn)
    options_.warn(message);
  else
    std::fprintf(stderr, "moejit: warning: %s\n", message.c_str());
}

std::string KernelCache::shardDirectory(std::string_view keyHex) const {
  return entriesRoot_ + "/" + std::string(keyHex.substr(0, 2));
}

std::string KernelCache::entryPath(const CacheKey &key) const {
  return shardDirectory(key.hex()) + "/" + key.hex() + std::string(kEntrySuffix);
}

ArtifactPtr KernelCache::loadFromDisk(const CacheKey &key) {
  if (!diskEnabled_)
    return nullptr;
  const std::string path = entryPath(key);
  EntryRead read = readEntryFile(path, &key);
  if (read.missing)
    return nullptr;
  if (!read.entry) {
    ++discarded_;
    warn("kernel cache: discarding " + path + ": " + read.problem + "; it will be rebuilt");
    // A refused file is not ours to delete; a rebuild renames over it.
    if (!read.refused && read.fd)
      unlinkIfSameFile(path, read.info);
    return nullptr;
  }
  // The mtime is the LRU clock of eviction; set it explicitly for a
  // resolution finer than the kernel's file-time tick.
  const long long now = cache_detail::nowNanoseconds();
  const struct timespec times[2] = {{0, UTIME_OMIT}, {now / 1000000000LL, now % 1000000000LL}};
  ::futimens(read.fd.get(), times);
  return std::make_shared<const KernelArtifact>(std::move(read.entry->artifact));
}

void KernelCache::throwStrictMiss(const CacheKey &key) const {
  const std::string where = diskEnabled_
                                ? "the kernel cache at " + options_.directory
                                : std::string("the in-memory kernel cache (no disk cache)");
  throw Error("kernel cache miss in strict mode: " + key.description() + " is not in " + where +
              "; run `moejit precompile` on the spec for this arch with the same "
              "MOEJIT_CACHE_DIR to fill the cache ahead of time, or turn strict mode off "
              "(MOEJIT_STRICT=0)");
}

ArtifactPtr KernelCache::getOrCompile(const CacheKey &key, const CompileFn &compile) {
  std::shared_ptr<Flight> flight;
  bool leader = false;
  {
    std::lock_guard lock(mutex_);
    if (auto it = memory_.find(key.hex()); it != memory_.end()) {
      ++memoryHits_;
      return it->second;
    }
    auto [it, inserted] = flights_.try_emplace(key.hex());
    if (inserted)
      it->second = std::make_shared<Flight>();
    flight = it->second;
    leader = inserted;
  }
  if (!leader)
    return flight->result.get();

  ArtifactPtr result;
  try {
    result = loadFromDisk(key);
    if (result) {
      ++diskHits_;
    } else {
      ++misses_;
      if (options_.strict)
        throwStrictMiss(key);
      result = compileUnderLock(key, compile);
    }
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      flights_.erase(key.hex());
    }
    flight->promise.set_exception(std::current_exception());
    throw;
  }
  {
    std::lock_guard lock(mutex_);
    memory_[key.hex()] = result;
    flights_.erase(key.hex());
  }
  flight->promise.set_value(result);
  return result;
}

ArtifactPtr KernelCache::compileUnderLock(const CacheKey &key, const CompileFn &compile) {
  std::optional<FileLock> keyLock;
  if (diskEnabled_) {
    const std::string shard = shardDirectory(key.hex());
    std::string error;
    if (cache_detail::makeDirectories(shard, 0700, error))
      keyLock = FileLock::acquire(lockPathOf(entryPath(key)), error);
    if (!keyLock)
      warn("kernel cache: " + error + "; compiling without the per-key lock");
    // Another process may have compiled it while this one waited.
    if (ArtifactPtr found = loadFromDisk(key)) {
      ++diskHits_;
      return found;
    }
  }
  ++compiles_;
  auto result = std::make_shared<const KernelArtifact>(compile());
  if (diskEnabled_ && publish(key, *result))
    evictOverLimit(entryPath(key));
  return result;
}

ArtifactPtr KernelCache::lookup(const CacheKey &key) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = memory_.find(key.hex()); it != memory_.end()) {
      ++memoryHits_;
      return it->second;
    }
  }
  ArtifactPtr found = loadFromDisk(key);
  if (!found) {
    ++misses_;
    return nullptr;
  }
  ++diskHits_;
  std::lock_guard lock(mutex_);
  return memory_.try_emplace(key.hex(), std::move(found)).first->second;
}

ArtifactPtr KernelCache::store(const CacheKey &key, KernelArtifact artifact) {
  auto stored = std::make_shared<const KernelArtifact>(std::move(artifact));
  if (diskEnabled_ && publish(key, *stored))
    evictOverLimit(entryPath(key));
  std::lock_guard lock(mutex_);
  memory_[key.hex()] = stored;
  return stored;
}

bool KernelCache::publish(const CacheKey &key, const KernelArtifact &artifact) {
  const std::string shard = shardDirectory(key.hex());
  const std::string finalPath = entryPath(key);
  const std::string tempPath = fmt::format("{}/{}{}{}.{:016x}.{}", shard, key.hex(), kTempMarker,
                                           ::getpid(), tempNonce_, tempCounter_.fetch_add(1));
  std::string error;
  auto fail = [&](const std::string &what) {
    ++publishFailures_;
    warn("kernel cache: cannot publish " + finalPath + ": " + what +
         "; the kernel stays cached in memory only");
    return false;
  };
  if (!cache_detail::makeDirectories(shard, 0700, error))
    return fail(error);

  const std::string bytes =
      encodeCacheEntry(key, artifact, cache_detail::nowNanoseconds() / 1000000000LL);
  UniqueFd fd(::open(tempPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd)
    return fail("cannot create " + tempPath + ": " + cache_detail::errnoText(errno));
  // Readers find either no entry or a complete one: write a temporary file,
  // make it durable, then rename it into place. Losing a rename race to
  // another writer is fine: both wrote the same key's complete entry.
  if (!cache_detail::writeAll(fd.get(), bytes) || ::fsync(fd.get()) != 0 || !fd.close() ||
      ::rename(tempPath.c_str(), finalPath.c_str()) != 0) {
    const int savedErrno = errno;
    ::unlink(tempPath.c_str());
    return fail(cache_detail::errnoText(savedErrno));
  }
  cache_detail::syncDirectory(shard);
  return true;
}

std::vector<KernelCache::DiskFile> KernelCache::scanDisk() const {
  std::vector<DiskFile> files;
  if (!diskEnabled_)
    return files;
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::directory_iterator shard(entriesRoot_, ec), end; !ec && shard != end;
       shard.increment(ec)) {
    std::error_code inner;
    for (fs::directory_iterator file(shard->path(), inner); !inner && file != end;
         file.increment(inner)) {
      const std::string name = file->path().filename().string();
      DiskFile found;
      if (name.find(kTempMarker) != std::string::npos)
        found.kind = DiskFile::Kind::Temp;
      else if (name.ends_with(kEntrySuffix))
        found.kind = DiskFile::Kind::Entry;
      else if (name.ends_with(kLockSuffix))
        found.kind = DiskFile::Kind::Lock;
      else
        continue;
      struct stat info;
      if (::lstat(file->path().c_str(), &info) != 0)
        continue; // removed meanwhile
      found.path = file->path().string();
      found.bytes = static_cast<uint64_t>(info.st_size);
      found.mtimeNs = mtimeNanoseconds(info);
      files.push_back(std::move(found));
    }
  }
  return files;
}

void KernelCache::evictOverLimit(const std::string &keepPath) {
  if (options_.maxBytes == 0)
    return;
  std::vector<DiskFile> entries;
  uint64_t total = 0;
  const long long now = cache_detail::nowNanoseconds();
  for (DiskFile &file : scanDisk()) {
    if (file.kind == DiskFile::Kind::Temp && now - file.mtimeNs > kStaleTempNanoseconds)
      ::unlink(file.path.c_str());
    if (file.kind == DiskFile::Kind::Entry) {
      total += file.bytes;
      entries.push_back(std::move(file));
    }
  }
  if (total <= options_.maxBytes)
    return;
  std::sort(entries.begin(), entries.end(),
            [](const DiskFile &a, const DiskFile &b) { return a.mtimeNs < b.mtimeNs; });
  // A reader that already opened an evicted entry keeps reading it: unlink
  // removes the name, not the open file.
  for (const DiskFile &entry : entries) {
    if (total <= options_.maxBytes)
      break;
    if (entry.path == keepPath || ::unlink(entry.path.c_str()) != 0)
      continue;
    total -= entry.bytes;
    ++evicted_;
    cache_detail::removeLockFile(lockPathOf(entry.path));
  }
}

std::vector<CacheEntryInfo> KernelCache::list() const {
  std::vector<CacheEntryInfo> infos;
  for (const DiskFile &file : scanDisk()) {
    if (file.kind != DiskFile::Kind::Entry)
      continue;
    EntryRead read = readEntryFile(file.path, nullptr);
    if (read.missing)
      continue;
    CacheEntryInfo info;
    info.path = file.path;
    info.fileBytes = file.bytes;
    info.lastUsedUnixSeconds = file.mtimeNs / 1000000000LL;
    if (read.entry) {
      const CacheEntryHeader &h = read.entry->header;
      info.key = h.key;
      info.kernelNames = h.kernelNames;
      info.ptxBytes = h.ptxBytes;
      info.cubinBytes = h.cubinBytes;
      info.createdUnixSeconds = h.createdUnixSeconds;
    } else {
      info.key = std::filesystem::path(file.path).stem().string();
      info.problem = read.problem;
    }
    infos.push_back(std::move(info));
  }
  std::sort(infos.begin(), infos.end(),
            [](const CacheEntryInfo &a, const CacheEntryInfo &b) { return a.key < b.key; });
  return infos;
}

KernelCacheStats KernelCache::stats() const {
  KernelCacheStats stats;
  for (const DiskFile &file : scanDisk()) {
    if (file.kind == DiskFile::Kind::Entry) {
      ++stats.entries;
      stats.bytes += file.bytes;
    }
  }
  {
    std::lock_guard lock(mutex_);
    stats.memoryEntries = memory_.size();
  }
  stats.memoryHits = memoryHits_;
  stats.diskHits = diskHits_;
  stats.misses = misses_;
  stats.compiles = compiles_;
  stats.discarded = discarded_;
  stats.evicted = evicted_;
  stats.publishFailures = publishFailures_;
  return stats;
}

size_t KernelCache::clear() {
  size_t removed = 0;
  for (const DiskFile &file : scanDisk()) {
    switch (file.kind) {
    case DiskFile::Kind::Entry:
      removed += ::unlink(file.path.c_str()) == 0 ? 1 : 0;
      break;
    case DiskFile::Kind::Temp:
      ::unlink(file.path.c_str());
      break;
    case DiskFile::Kind::Lock:
      cache_detail::removeLockFile(file.path);
      break;
    }
  }
  std::lock_guard lock(mutex_);
  memory_.clear();
  return removed;
}

std::vector<BadCacheEntry> KernelCache::verify(bool removeBad) {
  std::vector<BadCacheEntry> bad;
  for (const DiskFile &file : scanDisk()) {
    if (file.kind != DiskFile::Kind::Entry)
      continue;
    EntryRead read = readEntryFile(file.path, nullptr);
    if (read.missing || read.entry)
      continue;
    if (removeBad)
      ::unlink(file.path.c_str());
    bad.push_back({file.path, read.problem});
  }
  std::sort(bad.begin(), bad.end(),
            [](const BadCacheEntry &a, const BadCacheEntry &b) { return a.path < b.path; });
  return bad;
}

} // namespace moejit

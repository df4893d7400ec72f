// The two-level kernel cache: an in-memory map (thread-safe) in front of a
// content-addressed disk cache shared safely by several processes.
//
// Disk layout: <directory>/v1/<key[0:2]>/<key>.entry, with <key>.lock beside
// it (the per-key compile lock). The cache knows nothing of the compiler:
// the compile step reaches it as a CompileFn, so a host serving from a
// precompiled cache links no LLVM.
#pragma once

#include "moejit/knobs.h"
#include "runtime/cache/cache_entry.h"
#include "runtime/cache/cache_key.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moejit {

using ArtifactPtr = std::shared_ptr<const KernelArtifact>;
// Compiles the module of a key; throws (e.g. moejit::Error) on failure.
using CompileFn = std::function<KernelArtifact()>;
// Receives each warning (one line, no newline); called from any thread.
using CacheWarningSink = std::function<void(std::string_view)>;

struct KernelCacheOptions {
  std::string directory;          // empty: memory only
  bool strict = false;            // a miss throws instead of compiling
  uint64_t maxBytes = 1ull << 30; // disk size limit; 0: none
  CacheWarningSink warn;          // empty: "moejit: warning: ..." on stderr

  // directory = knobs.cacheDir, strict = knobs.strict.
  static KernelCacheOptions fromKnobs(const Knobs &knobs);
};

struct KernelCacheStats {
  // On disk (a scan); zero when the disk cache is off.
  uint64_t entries = 0;
  uint64_t bytes = 0;
  // This process, this cache object.
  uint64_t memoryEntries = 0;
  uint64_t memoryHits = 0;
  uint64_t diskHits = 0;
  uint64_t misses = 0;    // neither in memory nor on disk
  uint64_t compiles = 0;  // compile callbacks run
  uint64_t discarded = 0; // bad or refused entries met on load
  uint64_t evicted = 0;
  uint64_t publishFailures = 0;
};

struct CacheEntryInfo {
  std::string key;
  std::string path;
  std::vector<std::string> kernelNames;
  uint64_t fileBytes = 0;
  uint64_t ptxBytes = 0;
  uint64_t cubinBytes = 0;
  int64_t createdUnixSeconds = 0;
  int64_t lastUsedUnixSeconds = 0; // mtime, refreshed on every disk hit
  std::string problem;             // empty for a valid entry
};

struct BadCacheEntry {
  std::string path;
  std::string problem;
};

class KernelCache {
public:
  // Creates the directory (mode 0700) when missing. A directory that is not
  // the user's own or that others may write is refused with a warning, and
  // the cache then works in memory only.
  explicit KernelCache(KernelCacheOptions options);
  KernelCache(const KernelCache &) = delete;
  KernelCache &operator=(const KernelCache &) = delete;
  ~KernelCache();

  // Memory, then disk, then `compile` (published to disk before returning).
  // Threads asking for one key at once share one compile; processes sharing
  // the directory compile a key once (per-key lock file). Strict mode: a
  // miss throws moejit::Error naming the key and the precompile command.
  // A compile's exception reaches every waiting thread; the next call retries.
  ArtifactPtr getOrCompile(const CacheKey &key, const CompileFn &compile);

  // Memory, then disk; null on a miss. Never compiles.
  ArtifactPtr lookup(const CacheKey &key);

  // Publishes `artifact` for `key` (memory and disk), replacing what was
  // there, e.g. to add a cubin linked by this process's driver.
  ArtifactPtr store(const CacheKey &key, KernelArtifact artifact);

  // For `moejit cache list|stats|clear|verify`.
  std::vector<CacheEntryInfo> list() const;
  KernelCacheStats stats() const;
  // Removes every entry, stale temporary file and idle lock file, and the
  // memory level; returns the number of entries removed.
  size_t clear();
  // Every entry that fails to load (corrupt, truncated, misplaced, refused);
  // with `removeBad` they are deleted too.
  std::vector<BadCacheEntry> verify(bool removeBad = false);

  bool diskEnabled() const { return diskEnabled_; }
  const std::string &directory() const { return options_.directory; }
  std::string entryPath(const CacheKey &key) const;

private:
  struct Flight;
  struct DiskFile;

  ArtifactPtr findOrBuild(const CacheKey &key, const CompileFn *compile);
  ArtifactPtr loadFromDisk(const CacheKey &key);
  ArtifactPtr compileUnderLock(const CacheKey &key, const CompileFn &compile);
  [[noreturn]] void throwStrictMiss(const CacheKey &key) const;
  bool publish(const CacheKey &key, const KernelArtifact &artifact);
  void evictOverLimit(const std::string &keepPath);
  std::vector<DiskFile> scanDisk() const;
  std::string shardDirectory(std::string_view keyHex) const;
  void warn(const std::string &message) const;

  KernelCacheOptions options_;
  std::string entriesRoot_; // <directory>/v1
  bool diskEnabled_ = false;
  uint64_t tempNonce_ = 0;
  std::atomic<uint64_t> tempCounter_{0};

  mutable std::mutex mutex_; // guards memory_ and flights_
  std::unordered_map<std::string, ArtifactPtr> memory_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;

  std::atomic<uint64_t> memoryHits_{0}, diskHits_{0}, misses_{0}, compiles_{0};
  std::atomic<uint64_t> discarded_{0}, evicted_{0}, publishFailures_{0};
};

} // namespace moejit

#include "cache_test_support.h"

#include "moejit/error.h"
#include "runtime/cache/kernel_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <latch>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace moejit {
namespace {

using cache_test::sampleArtifact;
using cache_test::sampleKey;
using cache_test::TempDirectory;
using cache_test::WarningLog;
namespace fs = std::filesystem;

KernelCacheOptions optionsFor(const std::string &dir, WarningLog &log) {
  KernelCacheOptions options;
  options.directory = dir;
  options.warn = [&log](std::string_view message) { log.add(message); };
  return options;
}

// A compile callback that counts its runs.
struct CountingCompile {
  std::atomic<int> runs{0};
  KernelArtifact artifact = sampleArtifact();
  std::chrono::milliseconds delay{0};
  CompileFn fn() {
    return [this] {
      ++runs;
      std::this_thread::sleep_for(delay);
      return artifact;
    };
  }
};

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::vector<std::string> filesContaining(const std::string &dir, std::string_view marker) {
  std::vector<std::string> found;
  for (const auto &file : fs::recursive_directory_iterator(dir))
    if (file.path().filename().string().find(marker) != std::string::npos)
      found.push_back(file.path().string());
  return found;
}

// Forked children run `body` and exit with its status; a pipe holds them
// until release() so that they start together.
class ChildProcesses {
public:
  ChildProcesses() { EXPECT_EQ(::pipe(gate_), 0); }
  ~ChildProcesses() {
    closeGate();
    for (pid_t pid : pids_)
      ::waitpid(pid, nullptr, 0);
  }
  void spawn(const std::function<int()> &body) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(gate_[1]);
      char byte;
      while (::read(gate_[0], &byte, 1) < 0 && errno == EINTR) {
      }
      int status = 1;
      try {
        status = body();
      } catch (...) {
        status = 2;
      }
      ::_exit(status);
    }
    pids_.push_back(pid);
  }
  // Starts the children and returns how many did not exit with status 0.
  int releaseAndWait() {
    closeGate();
    int failures = 0;
    for (pid_t pid : pids_) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      failures += WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
    }
    pids_.clear();
    return failures;
  }

private:
  void closeGate() {
    for (int &fd : gate_)
      if (fd >= 0) {
        ::close(fd);
        fd = -1;
      }
  }
  int gate_[2] = {-1, -1};
  std::vector<pid_t> pids_;
};

TEST(KernelCache, CreatesAUserOnlyDirectory) {
  TempDirectory tmp;
  WarningLog log;
  KernelCache cache(optionsFor(tmp.sub("a/b/cache"), log));
  EXPECT_TRUE(cache.diskEnabled()) << log.joined();
  struct stat info;
  ASSERT_EQ(::stat(tmp.sub("a/b/cache").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(tmp.sub("a/b/cache/v1").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700u);
}

TEST(KernelCache, RefusesADirectoryOthersCanWrite) {
  TempDirectory tmp;
  WarningLog log;
  ASSERT_EQ(::mkdir(tmp.sub("shared").c_str(), 0700), 0);
  ASSERT_EQ(::chmod(tmp.sub("shared").c_str(), 0777), 0);
  KernelCache cache(optionsFor(tmp.sub("shared"), log));
  EXPECT_FALSE(cache.diskEnabled());
  EXPECT_TRUE(log.contains("writable by group or others")) << log.joined();
  // Still works, in memory.
  CountingCompile compile;
  EXPECT_EQ(*cache.getOrCompile(sampleKey(), compile.fn()), compile.artifact);
  EXPECT_EQ(*cache.getOrCompile(sampleKey(), compile.fn()), compile.artifact);
  EXPECT_EQ(compile.runs, 1);
}

TEST(KernelCache, MemoryOnlyWithoutDirectory) {
  KernelCache cache(KernelCacheOptions{});
  EXPECT_FALSE(cache.diskEnabled());
  CountingCompile compile;
  cache.getOrCompile(sampleKey(), compile.fn());
  EXPECT_EQ(cache.stats().entries, 0u);
  EXPECT_EQ(cache.stats().memoryEntries, 1u);
}

TEST(KernelCache, CompileThenMemoryHitThenDiskHitInAnotherProcessObject) {
  TempDirectory tmp;
  WarningLog log;
  const CacheKey key = sampleKey();
  CountingCompile compile;
  {
    KernelCache cache(optionsFor(tmp.path(), log));
    const ArtifactPtr first = cache.getOrCompile(key, compile.fn());
    const ArtifactPtr second = cache.getOrCompile(key, compile.fn());
    EXPECT_EQ(first, second);
    EXPECT_EQ(*first, compile.artifact);
    const KernelCacheStats stats = cache.stats();
    EXPECT_EQ(stats.compiles, 1u);
    EXPECT_EQ(stats.misses, 1u);
    EXPECT_EQ(stats.memoryHits, 1u);
    EXPECT_EQ(stats.entries, 1u);
    EXPECT_GT(stats.bytes, compile.artifact.ptx.size());
  }
  KernelCache warm(optionsFor(tmp.path(), log));
  EXPECT_EQ(*warm.getOrCompile(key, compile.fn()), compile.artifact);
  EXPECT_EQ(compile.runs, 1);
  EXPECT_EQ(warm.stats().diskHits, 1u);
  EXPECT_TRUE(log.messages().empty()) << log.joined();

  struct stat info;
  ASSERT_EQ(::stat(warm.entryPath(key).c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  const std::string expectedPath =
      tmp.path() + "/v1/" + key.hex().substr(0, 2) + "/" + key.hex() + ".entry";
  EXPECT_EQ(warm.entryPath(key), expectedPath);
}

TEST(KernelCache, LookupAndStoreNeverCompile) {
  TempDirectory tmp;
  WarningLog log;
  KernelCache cache(optionsFor(tmp.path(), log));
  const CacheKey key = sampleKey();
  EXPECT_EQ(cache.lookup(key), nullptr);
  KernelArtifact withCubin = sampleArtifact();
  withCubin.cubin = {'c', 'u', 'b', 'i', 'n'};
  withCubin.cubinDriverVersion = 13000;
  cache.store(key, withCubin);
  KernelCache other(optionsFor(tmp.path(), log));
  const ArtifactPtr found = other.lookup(key);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(*found, withCubin);
  EXPECT_NE(found->cubinFor(13000), nullptr);
}

TEST(KernelCache, SingleFlightAcrossThreads) {
  TempDirectory tmp;
  WarningLog log;
  KernelCache cache(optionsFor(tmp.path(), log));
  CountingCompile compile;
  compile.delay = std::chrono::milliseconds(100);
  constexpr int kThreads = 16;
  std::latch start(kThreads);
  std::vector<ArtifactPtr> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = cache.getOrCompile(sampleKey(), compile.fn());
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(compile.runs, 1);
  for (const ArtifactPtr &result : results)
    EXPECT_EQ(result, results[0]);
  EXPECT_EQ(cache.stats().compiles, 1u);
}

TEST(KernelCache, FailedCompileReachesEveryWaiterAndIsRetried) {
  TempDirectory tmp;
  WarningLog log;
  KernelCache cache(optionsFor(tmp.path(), log));
  std::atomic<int> runs{0};
  constexpr int kThreads = 8;
  std::latch start(kThreads);
  std::atomic<int> failures{0};
  auto failing = [&]() -> KernelArtifact {
    ++runs;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    throw Error("compile failed on purpose");
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&] {
      start.arrive_and_wait();
      try {
        cache.getOrCompile(sampleKey(), failing);
      } catch (const Error &e) {
        failures += std::string(e.what()) == "compile failed on purpose" ? 1 : 0;
      }
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(failures, kThreads);
  EXPECT_LE(runs, 2); // a thread arriving after the failure retries
  CountingCompile compile;
  EXPECT_EQ(*cache.getOrCompile(sampleKey(), compile.fn()), compile.artifact);
  EXPECT_EQ(compile.runs, 1);
}

TEST(KernelCache, ConcurrentWritersThreadsPublishOneValidEntry) {
  TempDirectory tmp;
  WarningLog log;
  KernelCache writer(optionsFor(tmp.path(), log));
  const CacheKey key = sampleKey();
  constexpr int kWriters = 4;
  std::vector<KernelArtifact> variants;
  for (int i = 0; i < kWriters; ++i)
    variants.push_back(sampleArtifact(std::string(1000 * (i + 1), static_cast<char>('a' + i))));
  std::atomic<bool> readerFailed{false};
  std::atomic<int> writersLeft{kWriters};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWriters; ++i)
    threads.emplace_back([&, i] {
      for (int round = 0; round < 10; ++round)
        writer.store(key, variants[i]);
      --writersLeft;
    });
  threads.emplace_back([&] {
    while (writersLeft > 0) {
      KernelCache reader(optionsFor(tmp.path(), log));
      const ArtifactPtr found = reader.lookup(key);
      if (found && std::find(variants.begin(), variants.end(), *found) == variants.end())
        readerFailed = true;
    }
  });
  for (std::thread &t : threads)
    t.join();
  EXPECT_FALSE(readerFailed);
  EXPECT_TRUE(log.messages().empty()) << log.joined();
  EXPECT_TRUE(writer.verify().empty());
  EXPECT_EQ(writer.list().size(), 1u);
  EXPECT_TRUE(filesContaining(tmp.path(), ".tmp.").empty());
}

TEST(KernelCache, ConcurrentWritersProcessesPublishOneValidEntry) {
  TempDirectory tmp;
  const CacheKey key = sampleKey();
  constexpr int kWriters = 4, kReaders = 3;
  std::vector<KernelArtifact> variants;
  for (int i = 0; i < kWriters; ++i)
    variants.push_back(sampleArtifact(std::string(2000 * (i + 1), static_cast<char>('a' + i))));
  {
    ChildProcesses children;
    for (int i = 0; i < kWriters; ++i)
      children.spawn([&, i] {
        WarningLog log;
        KernelCache cache(optionsFor(tmp.path(), log));
        for (int round = 0; round < 10; ++round)
          cache.store(key, variants[i]);
        return log.messages().empty() && cache.stats().publishFailures == 0 ? 0 : 1;
      });
    for (int i = 0; i < kReaders; ++i)
      children.spawn([&] {
        WarningLog log;
        for (int round = 0; round < 100; ++round) {
          KernelCache cache(optionsFor(tmp.path(), log));
          const ArtifactPtr found = cache.lookup(key);
          if (found && std::find(variants.begin(), variants.end(), *found) == variants.end())
            return 3;
        }
        return log.messages().empty() ? 0 : 4; // a half-written entry would warn
      });
    EXPECT_EQ(children.releaseAndWait(), 0);
  }
  WarningLog log;
  KernelCache cache(optionsFor(tmp.path(), log));
  EXPECT_TRUE(cache.verify().empty());
  ASSERT_EQ(cache.list().size(), 1u);
  const ArtifactPtr found = cache.lookup(key);
  ASSERT_NE(found, nullptr);
  EXPECT_NE(std::find(variants.begin(), variants.end(), *found), variants.end());
  EXPECT_TRUE(filesContaining(tmp.path(), ".tmp.").empty());
}

TEST(KernelCache, ColdProcessesCompileAKeyOnce) {
  TempDirectory tmp;
  const std::string counter = tmp.sub("compiles");
  const std::string cacheDir = tmp.sub("cache");
  const CacheKey key = sampleKey();
  constexpr int kChildren = 8;
  {
    ChildProcesses children;
    for (int i = 0; i < kChildren; ++i)
      children.spawn([&] {
        WarningLog log;
        KernelCache cache(optionsFor(cacheDir, log));
        const ArtifactPtr artifact = cache.getOrCompile(key, [&] {
          const int fd = ::open(counter.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
          (void)!::write(fd, "x", 1);
          ::close(fd);
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          return sampleArtifact();
        });
        return *artifact == sampleArtifact() && log.messages().empty() ? 0 : 1;
      });
    EXPECT_EQ(children.releaseAndWait(), 0);
  }
  EXPECT_EQ(readFile(counter), "x");
  WarningLog log;
  KernelCache cache(optionsFor(cacheDir, log));
  EXPECT_TRUE(cache.verify().empty());
  EXPECT_TRUE(filesContaining(cacheDir, ".tmp.").empty());
}

class DamagedEntry : public ::testing::Test {
protected:
  // Publishes the sample entry, lets `damage` edit its bytes, then checks
  // that a new cache object warns with `expectedProblem`, recompiles and
  // leaves a valid entry that a third object loads without compiling.
  void expectRebuild(const std::function<void(std::string &)> &damage,
                     std::string_view expectedProblem) {
    const CacheKey key = sampleKey();
    std::string path;
    {
      KernelCache cache(optionsFor(tmp.path(), log));
      cache.store(key, sampleArtifact());
      path = cache.entryPath(key);
    }
    std::string bytes = readFile(path);
    damage(bytes);
    writeFile(path, bytes);

    KernelCache cache(optionsFor(tmp.path(), log));
    ASSERT_EQ(cache.verify().size(), 1u);
    CountingCompile compile;
    EXPECT_EQ(*cache.getOrCompile(key, compile.fn()), compile.artifact);
    EXPECT_EQ(compile.runs, 1);
    EXPECT_EQ(cache.stats().discarded, 1u);
    EXPECT_TRUE(log.contains(expectedProblem)) << log.joined();
    EXPECT_TRUE(log.contains("it will be rebuilt")) << log.joined();

    KernelCache rebuilt(optionsFor(tmp.path(), log));
    EXPECT_TRUE(rebuilt.verify().empty());
    EXPECT_EQ(*rebuilt.getOrCompile(key, compile.fn()), compile.artifact);
    EXPECT_EQ(compile.runs, 1);
  }

  TempDirectory tmp;
  WarningLog log;
};

TEST_F(DamagedEntry, TruncatedIsRebuilt) {
  expectRebuild([](std::string &bytes) { bytes.resize(bytes.size() / 2); }, "truncated");
}

TEST_F(DamagedEntry, TruncatedToNothingIsRebuilt) {
  expectRebuild([](std::string &bytes) { bytes.clear(); }, "truncated");
}

TEST_F(DamagedEntry, BitFlipInPayloadIsRebuilt) {
  expectRebuild([](std::string &bytes) { bytes[bytes.size() - 3] ^= 0x10; }, "checksum mismatch");
}

TEST_F(DamagedEntry, BitFlipInHeaderIsRebuilt) {
  expectRebuild([](std::string &bytes) { bytes[kCacheEntryPrefixBytes + 40] ^= 0x01; },
                "discarding");
}

TEST_F(DamagedEntry, ForeignEntryIsRebuilt) {
  expectRebuild(
      [](std::string &bytes) {
        bytes = encodeCacheEntry(sampleKey("someone_else"), sampleArtifact(), 1);
      },
      "foreign entry");
}

TEST(KernelCache, VerifyNamesMisplacedAndCorruptEntriesAndCanRemoveThem) {
  TempDirectory tmp;
  WarningLog log;
  KernelCache cache(optionsFor(tmp.path(), log));
  const CacheKey good = sampleKey("good"), moved = sampleKey("moved"), bad = sampleKey("bad");
  cache.store(good, sampleArtifact());
  cache.store(bad, sampleArtifact());
  // An entry copied under another key's name.
  fs::create_directories(fs::path(cache.entryPath(moved)).parent_path());
  fs::copy_file(cache.entryPath(good), cache.entryPath(moved));
  std::string bytes = readFile(cache.entryPath(bad));
  bytes[bytes.size() / 2] ^= 0x40;
  writeFile(cache.entryPath(bad), bytes);

  const std::vector<BadCacheEntry> found = cache.verify();
  ASSERT_EQ(found.size(), 2u);
  for (const BadCacheEntry &entry : found) {
    if (entry.path == cache.entryPath(moved))
      EXPECT_NE(entry.problem.find("misplaced"), std::string::npos) << entry.problem;
    else
      EXPECT_EQ(entry.path, cache.entryPath(bad));
  }
  const std::vector<CacheEntryInfo> listed = cache.list();
  ASSERT_EQ(listed.size(), 3u);
  int valid = 0;
  for (const CacheEntryInfo &info : listed)
    valid += info.problem.empty() ? 1 : 0;
  EXPECT_EQ(valid, 1);

  EXPECT_EQ(cache.verify(/*removeBad=*/true).size(), 2u);
  EXPECT_TRUE(cache.verify().empty());
  EXPECT_EQ(cache.list().size(), 1u);
}

TEST(KernelCache, ListStatsAndClear) {
  TempDirectory tmp;
  WarningLog log;
  KernelCache cache(optionsFor(tmp.path(), log));
  CountingCompile compile;
  for (const char *name : {"k1", "k2", "k3"})
    cache.getOrCompile(sampleKey(name), compile.fn());
  const std::vector<CacheEntryInfo> listed = cache.list();
  ASSERT_EQ(listed.size(), 3u);
  for (const CacheEntryInfo &info : listed) {
    EXPECT_TRUE(info.problem.empty()) << info.problem;
    EXPECT_EQ(info.kernelNames, compile.artifact.kernelNames);
    EXPECT_EQ(info.ptxBytes, compile.artifact.ptx.size());
    EXPECT_EQ(info.cubinBytes, 0u);
    EXPECT_GT(info.fileBytes, info.ptxBytes);
    EXPECT_GT(info.createdUnixSeconds, 1600000000);
    EXPECT_GE(info.lastUsedUnixSeconds, info.createdUnixSeconds);
  }
  KernelCacheStats stats = cache.stats();
  EXPECT_EQ(stats.entries, 3u);
  EXPECT_EQ(stats.compiles, 3u);
  EXPECT_FALSE(filesContaining(tmp.path(), ".lock").empty());

  EXPECT_EQ(cache.clear(), 3u);
  stats = cache.stats();
  EXPECT_EQ(stats.entries, 0u);
  EXPECT_EQ(stats.bytes, 0u);
  EXPECT_EQ(stats.memoryEntries, 0u);
  EXPECT_TRUE(filesContaining(tmp.path(), ".lock").empty());
  EXPECT_TRUE(filesContaining(tmp.path(), ".entry").empty());
  cache.getOrCompile(sampleKey("k1"), compile.fn());
  EXPECT_EQ(compile.runs, 4);
}

TEST(KernelCache, EvictsLeastRecentlyUsedOverTheLimit) {
  TempDirectory tmp;
  WarningLog log;
  const CacheKey a = sampleKey("a"), b = sampleKey("b"), c = sampleKey("c"), d = sampleKey("d");
  uint64_t sizeOfThree = 0, sizeOfD = 0;
  {
    KernelCache unlimited(optionsFor(tmp.path(), log));
    for (const CacheKey *key : {&a, &b, &c})
      unlimited.store(*key, sampleArtifact());
    sizeOfThree = unlimited.stats().bytes;
    sizeOfD = encodeCacheEntry(d, sampleArtifact(), 0).size();
  }
  // A disk hit marks `a` as used, so `b` is now the least recently used.
  KernelCache reader(optionsFor(tmp.path(), log));
  ASSERT_NE(reader.lookup(a), nullptr);

  KernelCacheOptions options = optionsFor(tmp.path(), log);
  options.maxBytes = sizeOfThree + sizeOfD / 2;
  KernelCache limited(options);
  limited.store(d, sampleArtifact());
  EXPECT_EQ(limited.stats().evicted, 1u);
  EXPECT_TRUE(fs::exists(limited.entryPath(a)));
  EXPECT_FALSE(fs::exists(limited.entryPath(b)));
  EXPECT_TRUE(fs::exists(limited.entryPath(c)));
  EXPECT_TRUE(fs::exists(limited.entryPath(d)));
  EXPECT_LE(limited.stats().bytes, options.maxBytes);
}

TEST(KernelCache, EvictionNeverRemovesTheEntryJustWritten) {
  TempDirectory tmp;
  WarningLog log;
  KernelCacheOptions options = optionsFor(tmp.path(), log);
  options.maxBytes = 1;
  KernelCache cache(options);
  cache.store(sampleKey("a"), sampleArtifact());
  cache.store(sampleKey("b"), sampleArtifact());
  EXPECT_FALSE(fs::exists(cache.entryPath(sampleKey("a"))));
  EXPECT_TRUE(fs::exists(cache.entryPath(sampleKey("b"))));
}

TEST(KernelCache, AReaderKeepsAnEntryEvictedUnderIt) {
  TempDirectory tmp;
  WarningLog log;
  KernelCache cache(optionsFor(tmp.path(), log));
  const CacheKey key = sampleKey();
  cache.store(key, sampleArtifact());
  const int fd = ::open(cache.entryPath(key).c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(cache.clear(), 1u);
  std::string bytes(4096, '\0');
  const ssize_t got = ::read(fd, bytes.data(), bytes.size());
  ::close(fd);
  ASSERT_GT(got, 0);
  bytes.resize(static_cast<size_t>(got));
  std::string problem;
  EXPECT_TRUE(decodeCacheEntry(bytes, &key, problem)) << problem;
}

TEST(KernelCache, StrictModeMissThrowsAndNeverCompiles) {
  TempDirectory tmp;
  WarningLog log;
  KernelCacheOptions options = optionsFor(tmp.path(), log);
  options.strict = true;
  KernelCache strict(options);
  CountingCompile compile;
  const CacheKey key = sampleKey();
  try {
    strict.getOrCompile(key, compile.fn());
    FAIL() << "a strict-mode miss compiled";
  } catch (const Error &e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind("kernel cache miss in strict mode: ", 0), 0u) << message;
    EXPECT_NE(message.find(key.hex()), std::string::npos) << message;
    EXPECT_NE(message.find("moejit precompile"), std::string::npos) << message;
  }
  EXPECT_EQ(compile.runs, 0);
  // Filled ahead of time (as `moejit precompile` does), it serves.
  KernelCache(optionsFor(tmp.path(), log)).store(key, sampleArtifact());
  EXPECT_EQ(*strict.getOrCompile(key, compile.fn()), sampleArtifact());
  EXPECT_EQ(compile.runs, 0);
}

TEST(KernelCache, OptionsFromKnobs) {
  Knobs knobs;
  knobs.cacheDir = "/some/where";
  knobs.strict = true;
  const KernelCacheOptions options = KernelCacheOptions::fromKnobs(knobs);
  EXPECT_EQ(options.directory, "/some/where");
  EXPECT_TRUE(options.strict);
  EXPECT_EQ(options.maxBytes, 1ull << 30);
}

TEST(KernelCache, RefusesEntriesOthersCanWrite) {
  TempDirectory tmp;
  WarningLog log;
  const CacheKey key = sampleKey();
  std::string path;
  {
    KernelCache cache(optionsFor(tmp.path(), log));
    cache.store(key, sampleArtifact());
    path = cache.entryPath(key);
  }
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  KernelCache cache(optionsFor(tmp.path(), log));
  const std::vector<BadCacheEntry> bad = cache.verify();
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].problem.find("writable by group or others"), std::string::npos);
  CountingCompile compile;
  cache.getOrCompile(key, compile.fn());
  EXPECT_EQ(compile.runs, 1);
  EXPECT_TRUE(log.contains("refused: writable by group or others")) << log.joined();
  struct stat info;
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u); // rebuilt in place
}

TEST(KernelCache, RefusesEntriesOfAnotherUser) {
  if (::geteuid() != 0)
    GTEST_SKIP() << "needs root to chown an entry to another user";
  TempDirectory tmp;
  WarningLog log;
  const CacheKey key = sampleKey();
  KernelCache cache(optionsFor(tmp.path(), log));
  cache.store(key, sampleArtifact());
  ASSERT_EQ(::chown(cache.entryPath(key).c_str(), 12345, 12345), 0);
  KernelCache other(optionsFor(tmp.path(), log));
  EXPECT_EQ(other.lookup(key), nullptr);
  EXPECT_TRUE(log.contains("owned by uid 12345")) << log.joined();
}

TEST(KernelCache, RefusesASymlinkedEntry) {
  TempDirectory tmp;
  WarningLog log;
  const CacheKey key = sampleKey();
  KernelCache cache(optionsFor(tmp.path(), log));
  cache.store(sampleKey("real"), sampleArtifact());
  fs::create_directories(fs::path(cache.entryPath(key)).parent_path());
  fs::create_symlink(cache.entryPath(sampleKey("real")), cache.entryPath(key));
  KernelCache other(optionsFor(tmp.path(), log));
  EXPECT_EQ(other.lookup(key), nullptr);
  EXPECT_TRUE(log.contains("symbolic link")) << log.joined();
}

} // namespace
} // namespace moejit

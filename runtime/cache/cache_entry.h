// One kernel cache entry: what a compile produced, and its on-disk encoding.
//
// File layout (integers little-endian):
//   0  "MOEJITKC"                      magic
//   8  u32 format (kCacheEntryFormat)
//   12 u32 H, the header's length
//   16 u64 XXH3-64 of bytes [24, end)  header and payload
//   24 header: JSON (key, key fields, sizes, payload checksum, creation
//      time, kernel names, cubin driver version)
//   24+H payload: PTX, then the cubin (may be empty)
#pragma once

#include "runtime/cache/cache_key.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moejit {

// What the compile step hands to the cache, and the cache hands back.
struct KernelArtifact {
  std::string ptx;
  std::vector<std::string> kernelNames; // one per problem, in order
  // The whole-program cubin of the PTX (runtime/src/ptxas.h); empty: none.
  std::vector<char> cubin;
  // The oldest driver (CUDA version, e.g. 13000) to try the cubin with; 0:
  // any. A driver that refuses the cubin gets the PTX instead.
  int cubinDriverVersion = 0;

  // The cubin to try with a driver of `driverVersion`, else null (JIT the PTX).
  const std::vector<char> *cubinFor(int driverVersion) const {
    return !cubin.empty() && cubinDriverVersion <= driverVersion ? &cubin : nullptr;
  }
  friend bool operator==(const KernelArtifact &, const KernelArtifact &) = default;
};

inline constexpr uint32_t kCacheEntryFormat = 1;
inline constexpr size_t kCacheEntryPrefixBytes = 24;

struct CacheEntryHeader {
  std::string key;
  std::string keyFieldsJson; // canonical
  std::vector<std::string> kernelNames;
  uint64_t ptxBytes = 0;
  uint64_t cubinBytes = 0;
  int cubinDriverVersion = 0;
  std::string payloadChecksum; // XXH3-64, 16 hex digits
  int64_t createdUnixSeconds = 0;
};

struct CacheEntry {
  CacheEntryHeader header;
  KernelArtifact artifact;
};

std::string encodeCacheEntry(const CacheKey &key, const KernelArtifact &artifact,
                             int64_t createdUnixSeconds);

// Checks everything (magic, format, sizes, both checksums, that the stored
// key is the hash of the stored fields) and, when `expected` is given, that
// the entry belongs to that key. On failure returns nullopt and says why in
// `problem`; never throws on malformed bytes.
std::optional<CacheEntry> decodeCacheEntry(std::string_view bytes, const CacheKey *expected,
                                           std::string &problem);

} // namespace moejit

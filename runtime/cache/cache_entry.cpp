#include "runtime/cache/cache_entry.h"

#include "moejit/dsl.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <xxhash.h>

#include <cstring>

namespace moejit {
namespace {

constexpr std::string_view kMagic = "MOEJITKC";
// A header is a few KB; anything larger is corruption.
constexpr uint64_t kMaxHeaderBytes = 16u << 20;

void appendLittleEndian(std::string &out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i)
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t readLittleEndian(std::string_view bytes, size_t offset, int width) {
  uint64_t value = 0;
  for (int i = 0; i < width; ++i)
    value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
  return value;
}

std::string checksumHex(std::string_view bytes) {
  return fmt::format("{:016x}", XXH3_64bits(bytes.data(), bytes.size()));
}

} // namespace

std::string encodeCacheEntry(const CacheKey &key, const KernelArtifact &artifact,
                             int64_t createdUnixSeconds) {
  std::string payload = artifact.ptx;
  payload.append(artifact.cubin.begin(), artifact.cubin.end());
  const nlohmann::json header = {
      {"format", kCacheEntryFormat},
      {"key", key.hex()},
      {"key_fields", nlohmann::json::parse(key.canonicalJson())},
      {"kernels", artifact.kernelNames},
      {"ptx_bytes", artifact.ptx.size()},
      {"cubin_bytes", artifact.cubin.size()},
      {"cubin_driver_version", artifact.cubin.empty() ? 0 : artifact.cubinDriverVersion},
      {"payload_xxh3", checksumHex(payload)},
      {"created", createdUnixSeconds},
  };
  const std::string headerText = header.dump();
  const std::string body = headerText + payload;

  std::string out(kMagic);
  appendLittleEndian(out, kCacheEntryFormat, 4);
  appendLittleEndian(out, headerText.size(), 4);
  appendLittleEndian(out, XXH3_64bits(body.data(), body.size()), 8);
  return out + body;
}

std::optional<CacheEntry> decodeCacheEntry(std::string_view bytes, const CacheKey *expected,
                                           std::string &problem) {
  if (bytes.size() < kCacheEntryPrefixBytes) {
    problem = fmt::format("truncated: {} bytes, shorter than the {}-byte prefix", bytes.size(),
                          kCacheEntryPrefixBytes);
    return std::nullopt;
  }
  if (bytes.substr(0, kMagic.size()) != kMagic) {
    problem = "not a moejit cache entry (bad magic)";
    return std::nullopt;
  }
  const uint64_t format = readLittleEndian(bytes, 8, 4);
  if (format != kCacheEntryFormat) {
    problem = fmt::format("entry format {}, this moejit reads {}", format, kCacheEntryFormat);
    return std::nullopt;
  }
  const uint64_t headerBytes = readLittleEndian(bytes, 12, 4);
  const uint64_t storedChecksum = readLittleEndian(bytes, 16, 8);
  const std::string_view body = bytes.substr(kCacheEntryPrefixBytes);
  if (headerBytes > kMaxHeaderBytes || headerBytes > body.size()) {
    problem = fmt::format("truncated or corrupt: header of {} bytes in a {}-byte entry",
                          headerBytes, bytes.size());
    return std::nullopt;
  }

  CacheEntry entry;
  CacheEntryHeader &h = entry.header;
  std::string payloadChecksum;
  try {
    const nlohmann::json header = nlohmann::json::parse(body.substr(0, headerBytes));
    if (header.at("format").get<uint64_t>() != kCacheEntryFormat)
      throw std::runtime_error("format field disagrees with the prefix");
    h.key = header.at("key").get<std::string>();
    h.keyFieldsJson = header.at("key_fields").dump();
    h.kernelNames = header.at("kernels").get<std::vector<std::string>>();
    h.ptxBytes = header.at("ptx_bytes").get<uint64_t>();
    h.cubinBytes = header.at("cubin_bytes").get<uint64_t>();
    h.cubinDriverVersion = header.at("cubin_driver_version").get<int>();
    h.payloadChecksum = header.at("payload_xxh3").get<std::string>();
    h.createdUnixSeconds = header.at("created").get<int64_t>();
  } catch (const std::exception &e) {
    problem = std::string("corrupt header: ") + e.what();
    return std::nullopt;
  }
  const uint64_t declared = kCacheEntryPrefixBytes + headerBytes + h.ptxBytes + h.cubinBytes;
  if (h.ptxBytes > bytes.size() || h.cubinBytes > bytes.size() || declared != bytes.size()) {
    problem = fmt::format("{}: {} bytes, the header declares {}",
                          bytes.size() < declared ? "truncated" : "size mismatch", bytes.size(),
                          declared);
    return std::nullopt;
  }
  if (XXH3_64bits(body.data(), body.size()) != storedChecksum) {
    problem = "checksum mismatch (corrupt)";
    return std::nullopt;
  }
  const std::string_view payload = body.substr(headerBytes);
  if (checksumHex(payload) != h.payloadChecksum) {
    problem = "payload checksum mismatch (corrupt)";
    return std::nullopt;
  }
  if (contentHash(nlohmann::json::parse(h.keyFieldsJson)) != h.key) {
    problem = "the stored key is not the hash of the stored key fields";
    return std::nullopt;
  }
  if (expected && (h.key != expected->hex() || h.keyFieldsJson != expected->canonicalJson())) {
    problem = "foreign entry: it holds key " + h.key + ", not " + expected->hex();
    return std::nullopt;
  }

  entry.artifact.ptx = std::string(payload.substr(0, h.ptxBytes));
  const std::string_view cubin = payload.substr(h.ptxBytes);
  entry.artifact.cubin.assign(cubin.begin(), cubin.end());
  entry.artifact.cubinDriverVersion = h.cubinDriverVersion;
  entry.artifact.kernelNames = h.kernelNames;
  return entry;
}

} // namespace moejit

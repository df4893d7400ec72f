#include "cache_test_support.h"

#include <gtest/gtest.h>

namespace moejit {
namespace {

using cache_test::sampleArtifact;
using cache_test::sampleKey;

KernelArtifact artifactWithCubin() {
  KernelArtifact artifact = sampleArtifact();
  artifact.cubin = {'\x7f', 'E', 'L', 'F', '\0', '\1', '\2'};
  artifact.cubinDriverVersion = 13000;
  return artifact;
}

TEST(CacheEntry, RoundTrip) {
  const CacheKey key = sampleKey();
  const KernelArtifact artifact = artifactWithCubin();
  const std::string bytes = encodeCacheEntry(key, artifact, 1700000000);
  std::string problem;
  const std::optional<CacheEntry> entry = decodeCacheEntry(bytes, &key, problem);
  ASSERT_TRUE(entry) << problem;
  EXPECT_EQ(entry->artifact, artifact);
  EXPECT_EQ(entry->header.key, key.hex());
  EXPECT_EQ(entry->header.keyFieldsJson, key.canonicalJson());
  EXPECT_EQ(entry->header.ptxBytes, artifact.ptx.size());
  EXPECT_EQ(entry->header.cubinBytes, artifact.cubin.size());
  EXPECT_EQ(entry->header.createdUnixSeconds, 1700000000);
  EXPECT_EQ(entry->header.kernelNames, artifact.kernelNames);
  EXPECT_EQ(entry->header.payloadChecksum.size(), 16u);
}

TEST(CacheEntry, CubinOnlyForTheDriverThatLinkedIt) {
  const KernelArtifact artifact = artifactWithCubin();
  EXPECT_EQ(artifact.cubinFor(13000), &artifact.cubin);
  EXPECT_EQ(artifact.cubinFor(12080), nullptr);
  EXPECT_EQ(sampleArtifact().cubinFor(0), nullptr);
}

TEST(CacheEntry, EveryTruncationIsRejected) {
  const CacheKey key = sampleKey();
  const std::string bytes = encodeCacheEntry(key, artifactWithCubin(), 1);
  for (size_t length = 0; length < bytes.size(); ++length) {
    std::string problem;
    EXPECT_FALSE(decodeCacheEntry(std::string_view(bytes).substr(0, length), &key, problem))
        << "accepted a prefix of " << length << " bytes";
    EXPECT_FALSE(problem.empty());
  }
}

TEST(CacheEntry, EveryBitFlipIsRejected) {
  const CacheKey key = sampleKey();
  const std::string bytes = encodeCacheEntry(key, artifactWithCubin(), 1);
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit : {0, 7}) {
      std::string flipped = bytes;
      flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
      std::string problem;
      EXPECT_FALSE(decodeCacheEntry(flipped, &key, problem))
          << "accepted a flip of bit " << bit << " of byte " << i;
    }
  }
}

TEST(CacheEntry, AppendedBytesAreRejected) {
  const CacheKey key = sampleKey();
  std::string problem;
  EXPECT_FALSE(decodeCacheEntry(encodeCacheEntry(key, sampleArtifact(), 1) + "x", &key, problem));
  EXPECT_NE(problem.find("size mismatch"), std::string::npos) << problem;
}

TEST(CacheEntry, ForeignEntryIsRejected) {
  const CacheKey mine = sampleKey("mine");
  const CacheKey other = sampleKey("other");
  std::string problem;
  const std::string bytes = encodeCacheEntry(other, sampleArtifact(), 1);
  EXPECT_FALSE(decodeCacheEntry(bytes, &mine, problem));
  EXPECT_NE(problem.find("foreign entry"), std::string::npos) << problem;
  // Without an expected key the entry is self-consistent.
  EXPECT_TRUE(decodeCacheEntry(bytes, nullptr, problem)) << problem;
}

TEST(CacheEntry, OtherFilesAreRejected) {
  std::string problem;
  EXPECT_FALSE(decodeCacheEntry("", nullptr, problem));
  EXPECT_NE(problem.find("truncated"), std::string::npos) << problem;
  EXPECT_FALSE(decodeCacheEntry(std::string(64, 'x'), nullptr, problem));
  EXPECT_NE(problem.find("bad magic"), std::string::npos) << problem;
}

} // namespace
} // namespace moejit

// The ptxas step of a compile (runtime/src/ptxas.h): which ptxas is used,
// a cubin from valid PTX, and the error from invalid PTX. Skips the
// assembling tests where the toolkit has no ptxas.
#include "runtime/src/ptxas.h"

#include "moejit/error.h"

#include <gtest/gtest.h>

namespace moejit {
namespace {

constexpr const char *kPtx = ".version 8.0\n.target sm_90a\n.address_size 64\n\n"
                             ".visible .entry tiny()\n.maxntid 128, 1, 1\n{\n\tret;\n}\n";

TEST(Ptxas, FoundUnderCudaHomeUnlessSwitchedOff) {
  Knobs knobs;
  knobs.cudaHome = "/nonexistent-cuda";
  EXPECT_FALSE(findPtxas(knobs).has_value());
  knobs = Knobs::fromEnvironment();
  knobs.ptxas = "off";
  EXPECT_FALSE(findPtxas(knobs).has_value());
}

TEST(Ptxas, ANamedPtxasMustBeExecutable) {
  Knobs knobs;
  knobs.ptxas = "/nonexistent-cuda/bin/ptxas";
  try {
    findPtxas(knobs);
    FAIL() << "a missing MOEJIT_PTXAS was accepted";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("MOEJIT_PTXAS='/nonexistent-cuda/bin/ptxas'"),
              std::string::npos)
        << e.what();
  }
}

TEST(Ptxas, AssemblesWholeProgramCubinsAndReportsErrors) {
  Knobs knobs = Knobs::fromEnvironment();
  knobs.ptxas.clear();
  const std::optional<std::string> ptxas = findPtxas(knobs);
  if (!ptxas)
    GTEST_SKIP() << "no ptxas under " << knobs.cudaHome << "/bin";
  const std::vector<char> cubin = assembleCubin(*ptxas, kPtx, "sm_90a");
  ASSERT_GE(cubin.size(), 4u);
  EXPECT_EQ(std::string(cubin.data(), 4), "\x7f"
                                          "ELF");

  std::string broken = kPtx;
  broken.replace(broken.find("ret;"), 4, "not_an_instruction;");
  try {
    assembleCubin(*ptxas, broken, "sm_90a");
    FAIL() << "ptxas accepted broken PTX";
  } catch (const Error &e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("exited with status"), std::string::npos) << message;
    EXPECT_NE(message.find("not_an_instruction"), std::string::npos) << message;
    EXPECT_NE(message.find("MOEJIT_PTXAS=off"), std::string::npos) << message;
  }
}

} // namespace
} // namespace moejit

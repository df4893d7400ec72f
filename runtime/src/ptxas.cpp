#include "runtime/src/ptxas.h"

#include "moejit/error.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace moejit {
namespace {

namespace fs = std::filesystem;

bool isExecutableFile(const std::string &path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec) && ::access(path.c_str(), X_OK) == 0;
}

// A private scratch directory (mkdtemp), removed with everything in it.
class ScratchDirectory {
public:
  ScratchDirectory() {
    std::string pattern = (fs::temp_directory_path() / "moejit-ptxas-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw Error("ptxas: cannot create a scratch directory from '" + pattern +
                  "': " + std::strerror(errno));
    path_ = pattern;
  }
  ScratchDirectory(const ScratchDirectory &) = delete;
  ScratchDirectory &operator=(const ScratchDirectory &) = delete;
  ~ScratchDirectory() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  fs::path operator/(const char *name) const { return path_ / name; }

private:
  fs::path path_;
};

std::string readText(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs argv[0] with stdin from /dev/null and stdout and stderr into `log`;
// returns its wait status.
int runToCompletion(const std::vector<std::string> &args, const fs::path &log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char *> argv;
  for (const std::string &arg : args)
    argv.push_back(const_cast<char *>(arg.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0)
    throw Error("ptxas: cannot start '" + args[0] + "': " + std::strerror(spawned));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      throw Error("ptxas: waiting for '" + args[0] + "' failed: " + std::strerror(errno));
  return status;
}

} // namespace

std::optional<std::string> findPtxas(const Knobs &knobs) {
  if (knobs.ptxas == "off")
    return std::nullopt;
  if (!knobs.ptxas.empty()) {
    if (!isExecutableFile(knobs.ptxas))
      throw Error("MOEJIT_PTXAS='" + knobs.ptxas +
                  "' is not an executable file; name the toolkit's ptxas, or set it to off "
                  "to leave the PTX to the driver's JIT");
    return knobs.ptxas;
  }
  const std::string candidate = (fs::path(knobs.cudaHome) / "bin" / "ptxas").string();
  if (isExecutableFile(candidate))
    return candidate;
  return std::nullopt;
}

std::vector<char> assembleCubin(const std::string &ptxasPath, std::string_view ptx,
                                const std::string &arch) {
  ScratchDirectory scratch;
  const fs::path input = scratch / "kernels.ptx";
  const fs::path output = scratch / "kernels.cubin";
  const fs::path log = scratch / "ptxas.log";
  {
    std::ofstream out(input, std::ios::binary);
    out.write(ptx.data(), static_cast<std::streamsize>(ptx.size()));
    if (!out)
      throw Error("ptxas: cannot write the PTX to " + input.string());
  }
  const int status = runToCompletion(
      {ptxasPath, "-arch=" + arch, "--split-compile=0", "-o", output.string(), input.string()},
      log);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string how = WIFEXITED(status)
                                ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                : "was killed by signal " + std::to_string(WTERMSIG(status));
    throw Error("ptxas (" + ptxasPath + ") " + how + " assembling the PTX for " + arch +
                "; set MOEJIT_PTXAS=off to leave the PTX to the driver's JIT. Its log:\n" +
                readText(log));
  }
  const std::string cubin = readText(output);
  if (cubin.empty())
    throw Error("ptxas (" + ptxasPath + ") succeeded but wrote no cubin to " + output.string());
  return std::vector<char>(cubin.begin(), cubin.end());
}

} // namespace moejit

// Located diagnostics for .moe input and spec checks.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace moejit {

struct SourceLoc {
  std::string file; // empty for specs built in C++
  int line = 0;     // 1-based; 0 = no location
  int col = 0;      // 1-based
};

struct Diagnostic {
  enum class Severity { Error, Warning, Note };
  Severity severity = Severity::Error;
  SourceLoc loc;
  std::string message; // what is wrong
  std::string hint;    // what would fix it (may be empty)
  std::string path;    // field path for spec checks, e.g. "qwen.gemm.up_proj.tile"
};

class Diagnostics {
public:
  // `source` is the text the locations point into (for the caret lines).
  explicit Diagnostics(std::string source = {}) : source_(std::move(source)) {}

  void add(Diagnostic d) { list_.push_back(std::move(d)); }
  void error(SourceLoc loc, std::string message, std::string hint = {});
  bool hasErrors() const;
  std::size_t errorCount() const;
  // The text the locations point into. parseSpec and dumpAst set it to their
  // input when it is still empty, so a default-constructed Diagnostics works.
  void setSource(std::string source) { source_ = std::move(source); }
  const std::string &source() const { return source_; }
  const std::vector<Diagnostic> &all() const { return list_; }
  // "file:line:col: error: message\n  source line\n      ^\n  hint: ...\n"
  std::string render() const;

private:
  std::string source_;
  std::vector<Diagnostic> list_;
};

} // namespace moejit

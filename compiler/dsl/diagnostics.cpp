// Rendering of located diagnostics in the file:line:col style of compilers.
#include "moejit/diagnostics.h"

#include <algorithm>
#include <optional>
#include <string_view>

namespace moejit {

namespace {

std::string_view severityName(Diagnostic::Severity severity) {
  switch (severity) {
  case Diagnostic::Severity::Error:
    return "error";
  case Diagnostic::Severity::Warning:
    return "warning";
  case Diagnostic::Severity::Note:
    return "note";
  }
  return "error";
}

// Line `line` (1-based) of `text` without its line break; nullopt past the end.
std::optional<std::string_view> sourceLine(std::string_view text, int line) {
  std::size_t begin = 0;
  for (int i = 1; i < line; ++i) {
    std::size_t newline = text.find('\n', begin);
    if (newline == std::string_view::npos)
      return std::nullopt;
    begin = newline + 1;
  }
  std::size_t end = text.find('\n', begin);
  std::string_view result =
      text.substr(begin, end == std::string_view::npos ? text.size() - begin : end - begin);
  if (!result.empty() && result.back() == '\r')
    result.remove_suffix(1);
  return result;
}

std::string header(const Diagnostic &diag) {
  const SourceLoc &loc = diag.loc;
  std::string where;
  if (!loc.file.empty() || loc.line > 0) {
    where = loc.file.empty() ? "<input>" : loc.file;
    if (loc.line > 0)
      where += ":" + std::to_string(loc.line) + ":" + std::to_string(loc.col);
  } else if (!diag.path.empty()) {
    where = diag.path;
  }
  std::string out = where.empty() ? "" : where + ": ";
  out += severityName(diag.severity);
  out += ": " + diag.message + "\n";
  return out;
}

} // namespace

void Diagnostics::error(SourceLoc loc, std::string message, std::string hint) {
  Diagnostic diag;
  diag.severity = Diagnostic::Severity::Error;
  diag.loc = std::move(loc);
  diag.message = std::move(message);
  diag.hint = std::move(hint);
  list_.push_back(std::move(diag));
}

bool Diagnostics::hasErrors() const { return errorCount() > 0; }

std::size_t Diagnostics::errorCount() const {
  return std::count_if(list_.begin(), list_.end(), [](const Diagnostic &d) {
    return d.severity == Diagnostic::Severity::Error;
  });
}

std::string Diagnostics::render() const {
  std::string out;
  for (const Diagnostic &diag : list_) {
    out += header(diag);
    if (diag.loc.line > 0) {
      if (auto line = sourceLine(source_, diag.loc.line)) {
        out += "  ";
        out += *line;
        out += "\n  ";
        // Keep tabs so the caret lines up under tab-indented source.
        int column = std::max(diag.loc.col, 1);
        for (int i = 0; i + 1 < column; ++i)
          out += (i < static_cast<int>(line->size()) && (*line)[i] == '\t') ? '\t' : ' ';
        out += "^\n";
      }
    }
    if (!diag.hint.empty())
      out += "  hint: " + diag.hint + "\n";
  }
  if (std::size_t errors = errorCount(); errors > 1)
    out += std::to_string(errors) + " errors generated.\n";
  return out;
}

} // namespace moejit

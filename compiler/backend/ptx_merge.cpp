#include "compiler/backend/ptx_merge.h"

#include <map>
#include <set>
#include <string_view>

namespace moejit {
namespace {

bool startsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

std::string_view withoutComment(std::string_view line) {
  const size_t comment = line.find("//");
  return comment == std::string_view::npos ? line : line.substr(0, comment);
}

std::string_view trimmed(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos)
    return {};
  const size_t end = text.find_last_not_of(" \t\r");
  return text.substr(begin, end - begin + 1);
}

bool isIdentifierChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '$' || c == '%';
}

// The identifier that ends right before the first of `stops` in `text`.
std::string_view nameBefore(std::string_view text, std::string_view stops) {
  size_t end = text.find_first_of(stops);
  if (end == std::string_view::npos)
    return {};
  while (end > 0 && (text[end - 1] == ' ' || text[end - 1] == '\t'))
    --end;
  size_t begin = end;
  while (begin > 0 && isIdentifierChar(text[begin - 1]))
    --begin;
  return text.substr(begin, end - begin);
}

bool isHeaderDirective(std::string_view statement) {
  return startsWith(statement, ".version") || startsWith(statement, ".target") ||
         startsWith(statement, ".address_size");
}

// Directives that may sit between an entry's parameter list and its body.
bool isEntryDirective(std::string_view statement) {
  for (std::string_view directive :
       {".maxntid", ".reqntid", ".minnctapersm", ".maxnreg", ".explicitcluster",
        ".reqnctapercluster", ".maxclusterrank", ".pragma", ".param", ")"})
    if (startsWith(statement, directive))
      return true;
  return false;
}

} // namespace

bool mergePtxModules(const std::vector<std::string> &modules, std::string &merged,
                     std::string &why) {
  merged.clear();
  std::string firstHeader;
  std::map<std::string, std::string, std::less<>> externs; // name -> declaration
  std::set<std::string, std::less<>> entries;
  for (size_t m = 0; m < modules.size(); ++m) {
    const std::string where = "PTX module " + std::to_string(m);
    std::string header;
    int depth = 0;
    bool inEntryHeader = false;
    std::string_view rest = modules[m];
    while (!rest.empty()) {
      const size_t newline = rest.find('\n');
      const std::string_view line = rest.substr(0, newline);
      rest = newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);
      const std::string_view code = withoutComment(line);
      const std::string_view statement = trimmed(code);
      bool keep = true;
      if (depth == 0 && !statement.empty()) {
        if (isHeaderDirective(statement)) {
          header.append(statement).push_back('\n');
          keep = m == 0;
        } else if (startsWith(statement, ".extern")) {
          const std::string_view name = nameBefore(statement, "[;");
          if (name.empty()) {
            why = where + ": cannot read the name declared by '" + std::string(statement) + "'";
            return false;
          }
          auto known = externs.find(name);
          if (known != externs.end()) {
            if (known->second != statement) {
              why = where + " declares '" + std::string(name) + "' differently";
              return false;
            }
            keep = false;
          } else {
            externs.emplace(std::string(name), std::string(statement));
          }
        } else if (startsWith(statement, ".visible .entry") || startsWith(statement, ".entry")) {
          const std::string_view name = nameBefore(statement, "(");
          if (name.empty() || !entries.emplace(std::string(name)).second) {
            why = where + ": kernel '" + std::string(name) + "' is defined twice";
            return false;
          }
          inEntryHeader = true;
        } else if (!(inEntryHeader && (isEntryDirective(statement) || statement == "{"))) {
          why = where + " has a module-scope statement that is not merged: '" +
                std::string(statement) + "'";
          return false;
        }
      }
      for (char c : code) {
        if (c == '{') {
          ++depth;
          inEntryHeader = false;
        } else if (c == '}') {
          --depth;
        }
      }
      if (depth < 0) {
        why = where + " closes more braces than it opens";
        return false;
      }
      if (keep) {
        merged.append(line);
        if (newline != std::string_view::npos)
          merged.push_back('\n');
      }
    }
    if (depth != 0) {
      why = where + " ends inside a block";
      return false;
    }
    if (m == 0)
      firstHeader = header;
    else if (header != firstHeader) {
      why = where + " targets '" + header + "', module 0 '" + firstHeader + "'";
      return false;
    }
    if (!merged.empty() && merged.back() != '\n')
      merged.push_back('\n');
  }
  return true;
}

} // namespace moejit

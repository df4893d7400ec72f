// The .moe front end: text -> syntax tree -> Spec with source locations.
#pragma once

#include "compiler/dsl/ast.h"
#include "moejit/diagnostics.h"
#include "moejit/dsl.h"
#include "moejit/spec.h"

#include <map>
#include <set>
#include <string>
#include <string_view>

namespace moejit::dsl {

// Builds the syntax tree, reporting syntax errors and recovering at the next
// entry, line or block so that one run reports them all.
AstFile parseAst(std::string_view text, std::string_view file, Diagnostics &diags);

// A Spec read from a syntax tree, with where each of its fields is written.
struct SpecSource {
  Spec spec; // GEMMs in source order, schedules complete
  // Field path (see compiler/spec/check.h) -> location of the written value.
  std::map<std::string, SourceLoc> locations;
  // Paths whose problems the front end already reported: semantic checks on
  // them (or below them) would only repeat the same mistake.
  std::set<std::string> reported;

  // The location of `path`, or of its closest written ancestor.
  SourceLoc locate(const std::string &path) const;
  bool alreadyReported(const std::string &path) const;
};

// Gives meaning to the keys of the tree: unknown and duplicate keys, bad
// values, missing required keys; fills omitted schedule fields for `target`
// (open schedules from `tuned` when it has them: parseSpec).
SpecSource readSpec(const AstFile &ast, const Target &target, Diagnostics &diags,
                    const ScheduleSource *tuned = nullptr);

} // namespace moejit::dsl

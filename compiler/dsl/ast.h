// The syntax tree of a .moe file: blocks of `key = value` entries, before any
// meaning is given to the keys (that happens when the tree is read into a
// Spec, see parser.h).
#pragma once

#include "moejit/diagnostics.h"

#include <string>
#include <vector>

namespace moejit::dsl {

struct AstValue {
  // Error: the parser reported a malformed value; later stages skip it.
  enum class Kind { Identifier, Integer, Dims, Error };
  Kind kind = Kind::Identifier;
  std::string text; // as written: "bf16", "128", "128x128x64"
  SourceLoc loc;
};

// `key = value` or `keyword [name] { children }`.
struct AstNode {
  enum class Kind { Entry, Block };
  Kind kind = Kind::Entry;
  std::string key; // the entry's key or the block's keyword
  SourceLoc loc;   // of the key / keyword
  // Entries.
  AstValue value;
  // Blocks.
  std::string name; // "up_proj" in `gemm up_proj { ... }`; may be empty
  SourceLoc nameLoc;
  std::vector<AstNode> children;
  // The parser reported an error in this block's header; it has no children.
  bool malformed = false;
};

struct AstFile {
  std::string file;
  std::vector<AstNode> items;
};

// The indented tree printed by `moejit compile --emit=ast`.
std::string dumpAstTree(const AstFile &ast);

} // namespace moejit::dsl

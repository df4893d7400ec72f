// Tokens of the .moe language.
#pragma once

#include "moejit/diagnostics.h"

#include <string_view>
#include <vector>

namespace moejit::dsl {

enum class TokenKind {
  Identifier, // [A-Za-z_][A-Za-z0-9_]*, also true/false and enum values
  Integer,    // -?[0-9]+
  Dims,       // [0-9]+(x[0-9]+)+, e.g. 128x128x64
  LBrace,
  RBrace,
  Equals,
  Semicolon,
  Newline,
  End,
  Invalid, // already reported by the lexer
};

struct Token {
  TokenKind kind = TokenKind::End;
  std::string_view text; // points into the source
  int line = 1;
  int col = 1;
};

// Splits `text` into tokens; the last one is End. Malformed characters and
// numbers become Invalid tokens with an error in `diags`.
std::vector<Token> lex(std::string_view text, std::string_view file, Diagnostics &diags);

// How a token reads in a message: "identifier 'foo'", "end of line", ...
std::string describe(const Token &token);

} // namespace moejit::dsl

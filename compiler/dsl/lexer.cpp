#include "compiler/dsl/lexer.h"

#include <cctype>
#include <string>

namespace moejit::dsl {

namespace {

bool isDigit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }
bool isWordChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }

// 128, -4 or 128x128x64; anything else that starts like a number is malformed.
TokenKind classifyNumber(std::string_view word) {
  std::string_view digits = word;
  if (!digits.empty() && digits.front() == '-')
    digits.remove_prefix(1);
  if (digits.empty())
    return TokenKind::Invalid;
  bool negative = digits.size() != word.size();
  int groups = 1;
  bool expectDigit = true;
  for (char c : digits) {
    if (isDigit(c)) {
      expectDigit = false;
    } else if (c == 'x' && !expectDigit) {
      ++groups;
      expectDigit = true;
    } else {
      return TokenKind::Invalid;
    }
  }
  if (expectDigit)
    return TokenKind::Invalid;
  if (groups == 1)
    return TokenKind::Integer;
  return negative ? TokenKind::Invalid : TokenKind::Dims;
}

class Lexer {
public:
  Lexer(std::string_view text, std::string_view file, Diagnostics &diags)
      : text_(text), file_(file), diags_(diags) {}

  std::vector<Token> run() {
    std::vector<Token> tokens;
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\r') {
        advance(1);
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n')
          advance(1);
      } else if (c == '\n') {
        tokens.push_back(make(TokenKind::Newline, 1));
      } else if (c == '{') {
        tokens.push_back(make(TokenKind::LBrace, 1));
      } else if (c == '}') {
        tokens.push_back(make(TokenKind::RBrace, 1));
      } else if (c == '=') {
        tokens.push_back(make(TokenKind::Equals, 1));
      } else if (c == ';') {
        tokens.push_back(make(TokenKind::Semicolon, 1));
      } else if (isDigit(c) || c == '-') {
        tokens.push_back(number());
      } else if (isWordChar(c)) {
        tokens.push_back(make(TokenKind::Identifier, wordLength(pos_)));
      } else {
        tokens.push_back(unexpectedCharacter());
      }
    }
    tokens.push_back(Token{TokenKind::End, text_.substr(text_.size()), line_, col_});
    return tokens;
  }

private:
  std::size_t wordLength(std::size_t from) const {
    std::size_t end = from;
    while (end < text_.size() && isWordChar(text_[end]))
      ++end;
    return end - from;
  }

  Token make(TokenKind kind, std::size_t length) {
    Token token{kind, text_.substr(pos_, length), line_, col_};
    advance(length);
    return token;
  }

  void advance(std::size_t count) {
    for (std::size_t i = 0; i < count; ++i, ++pos_) {
      if (text_[pos_] == '\n') {
        ++line_;
        col_ = 1;
      } else {
        ++col_;
      }
    }
  }

  Token number() {
    std::size_t length = (text_[pos_] == '-' ? 1 : 0);
    length += wordLength(pos_ + length);
    Token token = make(TokenKind::Invalid, length);
    token.kind = classifyNumber(token.text);
    if (token.kind == TokenKind::Invalid)
      diags_.error(loc(token), "malformed number '" + std::string(token.text) + "'",
                   "write a decimal integer such as 128, or dimensions such as 128x128x64");
    return token;
  }

  Token unexpectedCharacter() {
    // One UTF-8 sequence at a time, so a multi-byte character is one error.
    std::size_t length = 1;
    while (pos_ + length < text_.size() &&
           (static_cast<unsigned char>(text_[pos_ + length]) & 0xC0) == 0x80)
      ++length;
    Token token = make(TokenKind::Invalid, length);
    diags_.error(loc(token), "unexpected character '" + std::string(token.text) + "'",
                 "entries look like 'key = value'; '#' starts a comment");
    return token;
  }

  SourceLoc loc(const Token &token) const {
    return SourceLoc{std::string(file_), token.line, token.col};
  }

  std::string_view text_;
  std::string_view file_;
  Diagnostics &diags_;
  std::size_t pos_ = 0;
  int line_ = 1;
  int col_ = 1;
};

} // namespace

std::vector<Token> lex(std::string_view text, std::string_view file, Diagnostics &diags) {
  return Lexer(text, file, diags).run();
}

std::string describe(const Token &token) {
  switch (token.kind) {
  case TokenKind::Newline:
    return "end of line";
  case TokenKind::End:
    return "end of file";
  default:
    return "'" + std::string(token.text) + "'";
  }
}

} // namespace moejit::dsl

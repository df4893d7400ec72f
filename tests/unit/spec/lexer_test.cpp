#include "compiler/dsl/lexer.h"

#include <gtest/gtest.h>

namespace moejit::dsl {
namespace {

std::vector<TokenKind> kinds(const std::vector<Token> &tokens) {
  std::vector<TokenKind> out;
  for (const Token &token : tokens)
    out.push_back(token.kind);
  return out;
}

TEST(Lexer, TokenKindsAndText) {
  Diagnostics diags;
  auto tokens = lex("layer a { tile = 128x64x32; x = -4 }\n", "t.moe", diags);
  EXPECT_FALSE(diags.hasErrors());
  using K = TokenKind;
  EXPECT_EQ(kinds(tokens), (std::vector<K>{K::Identifier, K::Identifier, K::LBrace, K::Identifier,
                                           K::Equals, K::Dims, K::Semicolon, K::Identifier,
                                           K::Equals, K::Integer, K::RBrace, K::Newline, K::End}));
  EXPECT_EQ(tokens[5].text, "128x64x32");
  EXPECT_EQ(tokens[9].text, "-4");
}

TEST(Lexer, CommentsAndLocations) {
  Diagnostics diags;
  auto tokens = lex("# comment { = }\n  experts = 8 # trailing\n", "t.moe", diags);
  ASSERT_FALSE(diags.hasErrors());
  ASSERT_EQ(tokens[0].kind, TokenKind::Newline);
  EXPECT_EQ(tokens[1].text, "experts");
  EXPECT_EQ(tokens[1].line, 2);
  EXPECT_EQ(tokens[1].col, 3);
  EXPECT_EQ(tokens[3].text, "8");
  EXPECT_EQ(tokens[3].col, 13);
  EXPECT_EQ(tokens[4].kind, TokenKind::Newline);
}

TEST(Lexer, MalformedNumbersAreLocatedErrors) {
  for (const char *bad : {"128x", "12ab", "-", "-2x3", "1xx2"}) {
    Diagnostics diags;
    auto tokens = lex(std::string("v = ") + bad, "t.moe", diags);
    ASSERT_EQ(diags.all().size(), 1u) << bad;
    EXPECT_EQ(diags.all()[0].loc.col, 5) << bad;
    EXPECT_EQ(tokens[2].kind, TokenKind::Invalid) << bad;
  }
}

TEST(Lexer, UnexpectedCharacterIsOneErrorPerCharacter) {
  Diagnostics diags;
  auto tokens = lex("a \xc3\xa9 $", "t.moe", diags);
  EXPECT_EQ(diags.all().size(), 2u);
  EXPECT_EQ(tokens[1].text, "\xc3\xa9");
  EXPECT_EQ(tokens.back().kind, TokenKind::End);
}

} // namespace
} // namespace moejit::dsl

#include "compiler/dsl/ast.h"

#include <fmt/format.h>

namespace moejit::dsl {

namespace {

std::string_view kindName(AstValue::Kind kind) {
  switch (kind) {
  case AstValue::Kind::Identifier:
    return "identifier";
  case AstValue::Kind::Integer:
    return "integer";
  case AstValue::Kind::Dims:
    return "dims";
  case AstValue::Kind::Error:
    return "error";
  }
  return "value";
}

void dumpNode(const AstNode &node, int depth, std::string &out) {
  std::string indent(2 * depth, ' ');
  if (node.kind == AstNode::Kind::Entry) {
    out += fmt::format("{}Entry {} = {} ({}) @{}:{}\n", indent, node.key, node.value.text,
                       kindName(node.value.kind), node.loc.line, node.loc.col);
    return;
  }
  out += fmt::format("{}Block {}{}{} @{}:{}\n", indent, node.key, node.name.empty() ? "" : " ",
                     node.name, node.loc.line, node.loc.col);
  for (const AstNode &child : node.children)
    dumpNode(child, depth + 1, out);
}

} // namespace

std::string dumpAstTree(const AstFile &ast) {
  std::string out = fmt::format("File {}\n", ast.file.empty() ? "<input>" : ast.file);
  for (const AstNode &item : ast.items)
    dumpNode(item, 1, out);
  return out;
}

} // namespace moejit::dsl

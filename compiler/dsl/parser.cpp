// The .moe front end: syntax (tokens -> tree), then meaning (tree -> Spec),
// then the shared semantic checks located back into the source.
#include "compiler/dsl/parser.h"

#include "compiler/dsl/lexer.h"
#include "compiler/spec/check.h"
#include "compiler/spec/names.h"
#include "moejit/dsl.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <functional>
#include <optional>
#include <span>

namespace moejit::dsl {

namespace {

//===----------------------------------------------------------------------===//
// Syntax
//===----------------------------------------------------------------------===//

// file  := (layer | sep)*
// block := IDENT [IDENT] '{' (entry | block | sep)* '}'
// entry := IDENT '=' (IDENT | INTEGER | DIMS) (sep | before '}')
// sep   := NEWLINE | ';'
class Parser {
public:
  Parser(std::vector<Token> tokens, std::string_view file, Diagnostics &diags)
      : tokens_(std::move(tokens)), file_(file), diags_(diags) {}

  AstFile parseFile() {
    AstFile ast;
    ast.file = std::string(file_);
    while (true) {
      skipSeparators();
      const Token &token = peek();
      if (token.kind == TokenKind::End)
        break;
      if (token.kind == TokenKind::Identifier) {
        ast.items.push_back(parseItem());
      } else if (token.kind == TokenKind::RBrace) {
        error(token, "unexpected '}' outside of any block", "remove it");
        advance();
      } else {
        error(token, fmt::format("expected 'layer', got {}", describe(token)),
              "a file is a list of 'layer NAME { ... }' blocks");
        skipLine();
      }
    }
    return ast;
  }

private:
  const Token &peek() const { return tokens_[pos_]; }
  const Token &advance() {
    const Token &token = tokens_[pos_];
    if (token.kind != TokenKind::End)
      ++pos_;
    return token;
  }
  bool isSeparator(const Token &token) const {
    return token.kind == TokenKind::Newline || token.kind == TokenKind::Semicolon;
  }
  void skipSeparators() {
    while (isSeparator(peek()))
      advance();
  }

  SourceLoc loc(const Token &token) const {
    return SourceLoc{std::string(file_), token.line, token.col};
  }

  // Invalid tokens were reported by the lexer; one error per mistake.
  void error(const Token &token, std::string message, std::string hint = {}) {
    if (token.kind != TokenKind::Invalid)
      diags_.error(loc(token), std::move(message), std::move(hint));
  }

  // Skips the rest of a broken entry: up to the next separator (consumed) or
  // the '}' that closes the enclosing block (kept), jumping over nested blocks.
  void skipLine() {
    int depth = 0;
    while (peek().kind != TokenKind::End) {
      const Token &token = peek();
      if (token.kind == TokenKind::RBrace) {
        if (depth == 0)
          return;
        --depth;
      } else if (token.kind == TokenKind::LBrace) {
        ++depth;
      } else if (depth == 0 && isSeparator(token)) {
        advance();
        return;
      }
      advance();
    }
  }

  AstNode parseItem() {
    const Token &key = advance();
    AstNode node;
    node.key = std::string(key.text);
    node.loc = loc(key);
    if (peek().kind == TokenKind::Equals) {
      advance();
      parseEntryValue(node);
      return node;
    }
    node.kind = AstNode::Kind::Block;
    if (peek().kind == TokenKind::Identifier) {
      node.name = std::string(peek().text);
      node.nameLoc = loc(peek());
      advance();
    }
    if (peek().kind != TokenKind::LBrace) {
      const Token &token = peek();
      if (node.name.empty())
        error(token,
              fmt::format("expected '=' or '{{' after '{}', got {}", node.key, describe(token)),
              fmt::format("write '{} = VALUE' or '{} {{ ... }}'", node.key, node.key));
      else
        error(token,
              fmt::format("expected '{{' to open block '{} {}', got {}", node.key, node.name,
                          describe(token)),
              fmt::format("write '{} {} {{ ... }}'", node.key, node.name));
      node.malformed = true;
      skipLine();
      return node;
    }
    parseBlockBody(node, advance());
    return node;
  }

  void parseEntryValue(AstNode &node) {
    const Token &token = peek();
    node.value.loc = loc(token);
    switch (token.kind) {
    case TokenKind::Identifier:
      node.value.kind = AstValue::Kind::Identifier;
      break;
    case TokenKind::Integer:
      node.value.kind = AstValue::Kind::Integer;
      break;
    case TokenKind::Dims:
      node.value.kind = AstValue::Kind::Dims;
      break;
    default:
      error(token, fmt::format("expected a value after '{} =', got {}", node.key, describe(token)),
            "values are names (bf16), integers (128), or dimensions (128x128x64)");
      node.value.kind = AstValue::Kind::Error;
      skipLine();
      return;
    }
    node.value.text = std::string(token.text);
    advance();

    const Token &next = peek();
    if (isSeparator(next)) {
      advance();
    } else if (next.kind != TokenKind::RBrace && next.kind != TokenKind::End) {
      error(next,
            fmt::format("expected a line break or ';' after '{} = {}', got {}", node.key,
                        node.value.text, describe(next)),
            "put one entry per line, or separate entries with ';'");
      // A following `key = ...` is most likely a second entry on the line.
      if (next.kind != TokenKind::Identifier)
        skipLine();
    }
  }

  void parseBlockBody(AstNode &block, const Token &open) {
    while (true) {
      skipSeparators();
      const Token &token = peek();
      if (token.kind == TokenKind::RBrace) {
        advance();
        return;
      }
      if (token.kind == TokenKind::End) {
        std::string what = block.name.empty() ? block.key : block.key + " " + block.name;
        error(open, fmt::format("block '{}' is not closed before the end of the file", what),
              "add the missing '}'");
        return;
      }
      if (token.kind == TokenKind::Identifier) {
        block.children.push_back(parseItem());
        continue;
      }
      error(token, fmt::format("expected a key or a block, got {}", describe(token)),
            "entries look like 'key = value'");
      skipLine();
    }
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  std::string_view file_;
  Diagnostics &diags_;
};

//===----------------------------------------------------------------------===//
// Meaning
//===----------------------------------------------------------------------===//

std::size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The closest candidate within a small edit distance.
std::optional<std::string_view> closest(std::string_view word,
                                        std::span<const std::string_view> candidates) {
  std::optional<std::string_view> best;
  std::size_t bestDistance = std::min<std::size_t>(2, std::max<std::size_t>(word.size() / 2, 1));
  for (std::string_view candidate : candidates) {
    std::size_t distance = editDistance(word, candidate);
    if (distance <= bestDistance && (!best || distance < editDistance(word, *best))) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

std::string joinNames(std::span<const std::string_view> names) {
  std::string out;
  for (std::string_view name : names)
    out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

template <typename Enum> std::vector<std::string_view> enumNames() {
  std::vector<std::string_view> names;
  for (const auto &entry : namesOf<Enum>())
    names.push_back(entry.name);
  return names;
}

// The keys and blocks one kind of block accepts.
struct BlockGrammar {
  std::string_view what; // "layer", "router", ...
  std::vector<std::string_view> keys;
  std::vector<std::string_view> blocks;
  std::vector<std::string_view> repeatableBlocks;
};

const BlockGrammar kLayerGrammar{
    "layer",
    {"experts", "hidden", "intermediate", "dtype", "activation", "gate_up"},
    {"router", "rounding", "gemm"},
    {"gemm"}};
const BlockGrammar kRouterGrammar{"router", {"scores", "top_k", "renormalize"}, {}, {}};
const BlockGrammar kRoundingGrammar{"rounding", {"mode", "tile"}, {}, {}};
const BlockGrammar kGemmGrammar{
    "gemm", {"tile", "stages", "cluster", "warpgroups", "raster", "persistent", "stores"}, {}, {}};

bool contains(std::span<const std::string_view> list, std::string_view word) {
  return std::find(list.begin(), list.end(), word) != list.end();
}

class SpecReader {
public:
  SpecReader(const Target &target, Diagnostics &diags, const ScheduleSource *tuned)
      : target_(target), diags_(diags), tuned_(tuned) {}

  SpecSource read(const AstFile &ast) {
    // Problems of the whole file name the file but no line.
    source_.locations[""] = SourceLoc{ast.file, 0, 0};
    for (const AstNode &item : ast.items)
      readTopLevel(item);
    return std::move(source_);
  }

private:
  Spec &spec() { return source_.spec; }

  void error(const SourceLoc &loc, std::string message, std::string hint = {}) {
    diags_.error(loc, std::move(message), std::move(hint));
  }

  void readTopLevel(const AstNode &item) {
    if (item.kind == AstNode::Kind::Entry) {
      error(item.loc, fmt::format("'{}' must be inside a layer", item.key),
            "wrap the entries in 'layer NAME { ... }'");
      return;
    }
    if (item.key != "layer") {
      std::string hint = "a file is a list of 'layer NAME { ... }' blocks";
      if (editDistance(item.key, "layer") <= 2)
        hint = "did you mean 'layer'?";
      error(item.loc, fmt::format("expected 'layer', got '{}'", item.key), hint);
      return;
    }
    if (item.malformed)
      return;
    readLayer(item);
  }

  // Walks the children of `block`, reporting unknown and duplicate keys and
  // blocks; calls `onEntry`/`onBlock` for the known ones. Marks in `seen` the
  // keys present (or meant, for a misspelt one) so that they are not also
  // reported as missing.
  void walk(const AstNode &block, const std::string &path, const BlockGrammar &grammar,
            std::map<std::string, SourceLoc> &seen,
            const std::function<void(const AstNode &)> &onEntry,
            const std::function<void(const AstNode &)> &onBlock) {
    std::vector<std::string_view> all = grammar.keys;
    all.insert(all.end(), grammar.blocks.begin(), grammar.blocks.end());
    std::string where = block.name.empty() ? std::string(grammar.what)
                                           : fmt::format("{} '{}'", grammar.what, block.name);
    for (const AstNode &child : block.children) {
      bool isEntry = child.kind == AstNode::Kind::Entry;
      const auto &expected = isEntry ? grammar.keys : grammar.blocks;
      if (!contains(expected, child.key)) {
        reportUnknown(child, path, where, grammar, all, seen);
        continue;
      }
      if (!contains(grammar.repeatableBlocks, child.key)) {
        if (auto it = seen.find(child.key); it != seen.end()) {
          error(child.loc,
                fmt::format("duplicate {} '{}' in {}", isEntry ? "key" : "block", child.key, where),
                fmt::format("it is already set at line {}; remove one of them", it->second.line));
          continue;
        }
        seen[child.key] = child.loc;
      }
      if (isEntry && child.value.kind == AstValue::Kind::Error) {
        source_.reported.insert(path + "." + child.key);
        continue;
      }
      if (isEntry)
        onEntry(child);
      else
        onBlock(child);
    }
  }

  void reportUnknown(const AstNode &child, const std::string &path, const std::string &where,
                     const BlockGrammar &grammar, std::span<const std::string_view> all,
                     std::map<std::string, SourceLoc> &seen) {
    bool isEntry = child.kind == AstNode::Kind::Entry;
    if (isEntry && contains(grammar.blocks, child.key)) {
      error(child.loc, fmt::format("'{}' is a block, not a key", child.key),
            fmt::format("write '{} {{ ... }}'", child.key));
      seen.emplace(child.key, child.loc);
      source_.reported.insert(path + "." + child.key);
      return;
    }
    if (!isEntry && contains(grammar.keys, child.key)) {
      error(child.loc, fmt::format("'{}' is a key, not a block", child.key),
            fmt::format("write '{} = VALUE'", child.key));
      seen.emplace(child.key, child.loc);
      source_.reported.insert(path + "." + child.key);
      return;
    }
    std::string hint;
    if (auto suggestion = closest(child.key, all)) {
      hint = fmt::format("did you mean '{}'?", *suggestion);
      seen.emplace(std::string(*suggestion), child.loc);
      source_.reported.insert(path + "." + std::string(*suggestion));
    } else if (!grammar.keys.empty()) {
      hint = fmt::format("keys in a {} block: {}", grammar.what, joinNames(grammar.keys));
      if (!grammar.blocks.empty())
        hint += fmt::format("; blocks: {}", joinNames(grammar.blocks));
    }
    error(child.loc,
          fmt::format("unknown {} '{}' in {}", isEntry ? "key" : "block", child.key, where), hint);
  }

  // Records where the value of `path` is written.
  void locate(const std::string &path, const AstNode &entry) {
    source_.locations[path] = entry.value.loc;
  }

  void poison(const std::string &path) { source_.reported.insert(path); }

  std::optional<int> readInt(const AstNode &entry, const std::string &path) {
    locate(path, entry);
    if (entry.value.kind != AstValue::Kind::Integer) {
      error(entry.value.loc,
            fmt::format("expected an integer for '{}', got '{}'", entry.key, entry.value.text));
      poison(path);
      return std::nullopt;
    }
    auto value = parseInt32(entry.value.text, entry.value.loc);
    if (!value)
      poison(path);
    return value;
  }

  std::optional<int> parseInt32(std::string_view text, const SourceLoc &loc) {
    int value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range || end != text.data() + text.size()) {
      error(loc, fmt::format("integer '{}' does not fit in 32 bits", text),
            "values must lie between -2147483648 and 2147483647");
      return std::nullopt;
    }
    return value;
  }

  // MxN or MxNxK; component i is also located at "<path>.<name i>".
  std::optional<std::vector<int>> readDims(const AstNode &entry, const std::string &path,
                                           std::span<const std::string_view> componentNames,
                                           std::string_view example) {
    locate(path, entry);
    std::string shape;
    for (std::string_view name : componentNames) {
      if (!shape.empty())
        shape += 'x';
      for (char c : name)
        shape += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    auto fail = [&](std::string message) {
      error(entry.value.loc, std::move(message), fmt::format("e.g. {} = {}", entry.key, example));
      poison(path);
      return std::nullopt;
    };
    if (entry.value.kind != AstValue::Kind::Dims && entry.value.kind != AstValue::Kind::Integer)
      return fail(
          fmt::format("expected {} for '{}', got '{}'", shape, entry.key, entry.value.text));
    std::vector<int> dims;
    std::string_view text = entry.value.text;
    std::size_t start = 0;
    bool ok = true;
    while (true) {
      std::size_t end = text.find('x', start);
      std::string_view part = text.substr(start, end == std::string_view::npos ? end : end - start);
      SourceLoc loc = entry.value.loc;
      loc.col += static_cast<int>(start);
      if (dims.size() < componentNames.size())
        source_.locations[path + "." + std::string(componentNames[dims.size()])] = loc;
      auto value = parseInt32(part, loc);
      ok &= value.has_value();
      dims.push_back(value.value_or(0));
      if (end == std::string_view::npos)
        break;
      start = end + 1;
    }
    if (!ok) {
      poison(path);
      return std::nullopt;
    }
    if (dims.size() != componentNames.size())
      return fail(fmt::format("'{}' needs {} dimensions {}, got {} ('{}')", entry.key,
                              componentNames.size(), shape, dims.size(), entry.value.text));
    return dims;
  }

  template <typename Enum>
  std::optional<Enum> readEnum(const AstNode &entry, const std::string &path) {
    locate(path, entry);
    std::optional<Enum> value;
    if (entry.value.kind == AstValue::Kind::Identifier)
      value = parseName<Enum>(entry.value.text);
    if (!value) {
      std::vector<std::string_view> names = enumNames<Enum>();
      std::string hint = fmt::format("valid values: {}", listNames<Enum>());
      if (auto suggestion = closest(entry.value.text, names))
        hint = fmt::format("did you mean '{}'? valid values: {}", *suggestion, listNames<Enum>());
      error(entry.value.loc,
            fmt::format("invalid value '{}' for '{}'", entry.value.text, entry.key), hint);
      poison(path);
    }
    return value;
  }

  std::optional<bool> readBool(const AstNode &entry, const std::string &path) {
    locate(path, entry);
    if (entry.value.kind == AstValue::Kind::Identifier) {
      if (entry.value.text == "true")
        return true;
      if (entry.value.text == "false")
        return false;
    }
    error(entry.value.loc, fmt::format("invalid value '{}' for '{}'", entry.value.text, entry.key),
          "valid values: true | false");
    poison(path);
    return std::nullopt;
  }

  template <typename T, typename U> static void assign(T &field, const std::optional<U> &value) {
    if (value)
      field = *value;
  }

  struct PendingGemm {
    std::size_t index; // into layer.gemms
    SchedulePatch patch;
  };

  void readLayer(const AstNode &node) {
    spec().layers.emplace_back();
    const std::size_t layerIndex = spec().layers.size() - 1;
    LayerSpec &layer = spec().layers.back();
    layer.name = node.name;
    const std::string path = layerPath(spec(), layerIndex);
    source_.locations[path] = node.name.empty() ? node.loc : node.nameLoc;
    if (node.name.empty()) {
      error(node.loc, "a layer needs a name", "write 'layer NAME { ... }'");
      poison(path);
    }

    std::map<std::string, SourceLoc> seen;
    std::vector<PendingGemm> pending;
    walk(
        node, path, kLayerGrammar, seen,
        [&](const AstNode &entry) {
          const std::string field = path + "." + entry.key;
          if (entry.key == "experts")
            assign(layer.experts, readInt(entry, field));
          else if (entry.key == "hidden")
            assign(layer.hidden, readInt(entry, field));
          else if (entry.key == "intermediate")
            assign(layer.intermediate, readInt(entry, field));
          else if (entry.key == "dtype")
            assign(layer.dtype, readEnum<DType>(entry, field));
          else if (entry.key == "activation")
            assign(layer.activation, readEnum<Activation>(entry, field));
          else if (entry.key == "gate_up")
            assign(layer.gateUp, readEnum<GateUpLayout>(entry, field));
        },
        [&](const AstNode &block) {
          if (block.key == "router")
            readRouter(block, path, layer);
          else if (block.key == "rounding")
            readRounding(block, path, layer);
          else if (block.key == "gemm")
            readGemm(block, layerIndex, pending);
        });

    for (std::string_view key : {"experts", "hidden", "intermediate"}) {
      if (seen.count(std::string(key)))
        continue;
      error(source_.locations[path],
            fmt::format("layer '{}' is missing the required key '{}'", layer.name, key),
            fmt::format("add '{} = <size>' to the layer", key));
      poison(path + "." + std::string(key));
    }
    if (!seen.count("router")) {
      error(source_.locations[path], fmt::format("layer '{}' has no router block", layer.name),
            "add 'router { top_k = K }' with the experts chosen per token");
      poison(path + ".router");
    }

    // Defaults depend on the whole layer, so they come after all of it is read.
    for (const PendingGemm &gemm : pending) {
      GemmSpec &spec = layer.gemms[gemm.index];
      spec.schedule = gemm.patch == SchedulePatch{}
                          ? openSchedule(layer, spec.kind, target_, tuned_)
                          : applyPatch(defaultSchedule(layer, spec.kind, target_), gemm.patch);
    }
    addStandardGemms(layer, target_, tuned_);
  }

  // Records where the block at `path` is; false (and the path poisoned) when
  // the block did not parse, so its fields are not read.
  bool openUnnamedBlock(const AstNode &block, const std::string &path) {
    source_.locations[path] = block.loc;
    if (block.malformed) {
      poison(path);
      return false;
    }
    rejectName(block);
    return true;
  }

  void readRouter(const AstNode &block, const std::string &layerPath, LayerSpec &layer) {
    const std::string path = layerPath + ".router";
    if (!openUnnamedBlock(block, path))
      return;
    std::map<std::string, SourceLoc> seen;
    walk(
        block, path, kRouterGrammar, seen,
        [&](const AstNode &entry) {
          const std::string field = path + "." + entry.key;
          if (entry.key == "scores")
            assign(layer.router.scores, readEnum<ScoreFunc>(entry, field));
          else if (entry.key == "top_k")
            assign(layer.router.topK, readInt(entry, field));
          else if (entry.key == "renormalize")
            assign(layer.router.renormalize, readBool(entry, field));
        },
        [](const AstNode &) {});
    if (!seen.count("top_k")) {
      error(block.loc, "the router is missing the required key 'top_k'",
            "add 'top_k = K', the number of experts chosen per token");
      poison(path + ".top_k");
    }
  }

  void readRounding(const AstNode &block, const std::string &layerPath, LayerSpec &layer) {
    const std::string path = layerPath + ".rounding";
    if (!openUnnamedBlock(block, path))
      return;
    std::map<std::string, SourceLoc> seen;
    walk(
        block, path, kRoundingGrammar, seen,
        [&](const AstNode &entry) {
          const std::string field = path + "." + entry.key;
          if (entry.key == "mode")
            assign(layer.rounding.mode, readEnum<RoundingMode>(entry, field));
          else if (entry.key == "tile")
            assign(layer.rounding.tile, readInt(entry, field));
        },
        [](const AstNode &) {});
  }

  void rejectName(const AstNode &block) {
    if (!block.name.empty())
      error(block.nameLoc, fmt::format("a {} block takes no name", block.key),
            fmt::format("write '{} {{ ... }}'", block.key));
  }

  void readGemm(const AstNode &block, std::size_t layerIndex, std::vector<PendingGemm> &pending) {
    if (block.malformed)
      return;
    std::optional<GemmKind> kind = parseName<GemmKind>(block.name);
    if (!kind) {
      std::vector<std::string_view> names = enumNames<GemmKind>();
      std::string hint = fmt::format("kinds: {}", listNames<GemmKind>());
      if (auto suggestion = closest(block.name, names))
        hint = fmt::format("did you mean '{}'? kinds: {}", *suggestion, listNames<GemmKind>());
      if (block.name.empty())
        error(block.loc, "a gemm block needs a kind, e.g. 'gemm up_proj { ... }'", hint);
      else
        error(block.nameLoc, fmt::format("unknown gemm kind '{}'", block.name), hint);
      return;
    }
    LayerSpec &layer = spec().layers[layerIndex];
    layer.gemms.push_back(GemmSpec{*kind, Schedule{}});
    const std::size_t gemmIndex = layer.gemms.size() - 1;
    const std::string path = gemmPath(spec(), layerIndex, gemmIndex);
    source_.locations[path] = block.nameLoc;

    static constexpr std::string_view kTileNames[] = {"m", "n", "k"};
    static constexpr std::string_view kClusterNames[] = {"m", "n"};
    SchedulePatch patch;
    std::map<std::string, SourceLoc> seen;
    walk(
        block, path, kGemmGrammar, seen,
        [&](const AstNode &entry) {
          const std::string field = path + "." + entry.key;
          if (entry.key == "tile") {
            if (auto dims = readDims(entry, field, kTileNames, "128x128x64"))
              patch.tile = TileShape{(*dims)[0], (*dims)[1], (*dims)[2]};
          } else if (entry.key == "stages") {
            patch.stages = readInt(entry, field);
          } else if (entry.key == "cluster") {
            if (auto dims = readDims(entry, field, kClusterNames, "2x1"))
              patch.cluster = ClusterShape{(*dims)[0], (*dims)[1]};
          } else if (entry.key == "warpgroups") {
            patch.warpgroups = readEnum<WarpgroupMode>(entry, field);
          } else if (entry.key == "raster") {
            patch.raster = readEnum<Raster>(entry, field);
          } else if (entry.key == "persistent") {
            patch.persistent = readBool(entry, field);
          } else if (entry.key == "stores") {
            patch.stores = readEnum<StoreMode>(entry, field);
          }
        },
        [](const AstNode &) {});
    pending.push_back(PendingGemm{gemmIndex, patch});
  }

  const Target &target_;
  const ScheduleSource *tuned_ = nullptr;
  Diagnostics &diags_;
  SpecSource source_;
};

bool isPrefixPath(const std::string &prefix, const std::string &path) {
  return path == prefix ||
         (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
          path[prefix.size()] == '.');
}

void setSourceIfEmpty(Diagnostics &diags, std::string_view text) {
  if (diags.source().empty())
    diags.setSource(std::string(text));
}

} // namespace

AstFile parseAst(std::string_view text, std::string_view file, Diagnostics &diags) {
  return Parser(lex(text, file, diags), file, diags).parseFile();
}

SpecSource readSpec(const AstFile &ast, const Target &target, Diagnostics &diags,
                    const ScheduleSource *tuned) {
  return SpecReader(target, diags, tuned).read(ast);
}

SourceLoc SpecSource::locate(const std::string &path) const {
  std::string current = path;
  while (true) {
    if (auto it = locations.find(current); it != locations.end())
      return it->second;
    if (current.empty())
      return SourceLoc{};
    std::size_t dot = current.rfind('.');
    current = dot == std::string::npos ? std::string() : current.substr(0, dot);
  }
}

bool SpecSource::alreadyReported(const std::string &path) const {
  return std::any_of(reported.begin(), reported.end(),
                     [&](const std::string &prefix) { return isPrefixPath(prefix, path); });
}

} // namespace moejit::dsl

namespace moejit {

std::optional<Spec> parseSpec(std::string_view text, std::string_view filename,
                              const Target &target, Diagnostics &diags,
                              const ScheduleSource *tuned) {
  dsl::setSourceIfEmpty(diags, text);
  Diagnostics found;
  dsl::AstFile ast = dsl::parseAst(text, filename, found);
  dsl::SpecSource source = dsl::readSpec(ast, target, found, tuned);
  const bool frontEndFailed = found.hasErrors();

  Diagnostics semantic;
  checkSpec(source.spec, target, semantic);
  for (Diagnostic diag : semantic.all()) {
    // With front-end errors an empty spec is a consequence, not news.
    if (source.alreadyReported(diag.path) || (frontEndFailed && diag.path.empty()))
      continue;
    diag.loc = source.locate(diag.path);
    if (diag.loc.file.empty())
      diag.loc.file = std::string(filename);
    found.add(std::move(diag));
  }

  std::vector<Diagnostic> ordered = found.all();
  std::stable_sort(ordered.begin(), ordered.end(), [](const Diagnostic &a, const Diagnostic &b) {
    return std::pair(a.loc.line, a.loc.col) < std::pair(b.loc.line, b.loc.col);
  });
  for (Diagnostic &diag : ordered)
    diags.add(std::move(diag));
  if (found.hasErrors())
    return std::nullopt;
  for (LayerSpec &layer : source.spec.layers)
    sortGemms(layer);
  return std::move(source.spec);
}

std::optional<std::string> dumpAst(std::string_view text, std::string_view filename,
                                   Diagnostics &diags) {
  dsl::setSourceIfEmpty(diags, text);
  std::size_t before = diags.errorCount();
  dsl::AstFile ast = dsl::parseAst(text, filename, diags);
  if (diags.errorCount() != before)
    return std::nullopt;
  return dsl::dumpAstTree(ast);
}

} // namespace moejit

// PreTokenizer: how tokenizer.json's pre_tokenizer cuts text into pieces before BPE — a
// Sequence of Split (regex or literal, all five behaviours, invert), Digits and ByteLevel
// steps. Regexes run on PCRE2 (UTF, UCP, JIT) with \s and \S pinned to Unicode's White_Space
// property, which is what Hugging Face's Oniguruma matches.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {

class Regex;

// A piece of the input: [begin, end) byte offsets into the text.
struct Span {
  size_t begin;
  size_t end;
};

class PreTokenizer {
 public:
  // `config` is tokenizer.json's "pre_tokenizer" (null: the whole text is one piece).
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(const nlohmann::json& config);
  ~PreTokenizer();

  // Appends the pieces of text[span] to *out, in order. Thread-safe.
  void Split(std::string_view text, Span span, std::vector<Span>* out) const;
  // Whether a ByteLevel step asks for a space before the text (add_prefix_space).
  bool add_prefix_space() const { return add_prefix_space_; }

  struct Step;

 private:
  PreTokenizer();
  std::vector<std::unique_ptr<Step>> steps_;
  bool add_prefix_space_ = false;
};

// A compiled PCRE2 pattern that finds all non-overlapping matches, left to right.
class Regex {
 public:
  // Translates \s and \S to White_Space classes, compiles with UTF + UCP and JIT.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  ~Regex();
  // Every match inside text[span], appended to *out. Thread-safe.
  void FindAll(std::string_view text, Span span, std::vector<Span>* out) const;

 private:
  struct Code;
  explicit Regex(Code* code) : code_(code) {}
  Code* code_;
};

}  // namespace dserve::engine

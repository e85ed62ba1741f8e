// PreTokenizer: how tokenizer.json's pre_tokenizer cuts text into pieces before BPE — a
// Sequence of Split (regex or literal, all five behaviours, invert), Digits and ByteLevel
// steps. Regexes run on PCRE2 (UTF, UCP, JIT) after TranslateForPcre2 (regex_translate.h): \s
// and \S pinned to Unicode's White_Space property, and general categories (\p{L}, ...) made to
// match Hugging Face's Unicode 16 tables rather than PCRE2's Unicode 14 ones.
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
  // Translates the pattern (TranslateForPcre2) in both forms, compiles them with UTF + UCP and
  // JIT. FindAll runs the faster kPcre2 form on pieces without a changed code point.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  ~Regex();
  // Every match inside text[span], appended to *out. Thread-safe. `may_hold_changed_category`
  // false says that HasChangedCategory(text[span]) is false, known without looking.
  void FindAll(std::string_view text, Span span, std::vector<Span>* out,
               bool may_hold_changed_category = true) const;

 private:
  struct Code;
  explicit Regex(Code* code) : code_(code) {}
  Code* code_;
};

}  // namespace dserve::engine

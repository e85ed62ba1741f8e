// AddedTokenMatcher: finds tokenizer.json's added tokens (special or not) in text before any
// pre-tokenization, as Hugging Face does: leftmost-longest matches, whitespace consumed on the
// sides that lstrip/rstrip ask for, single_word tokens only between non-word characters, and
// non-normalized tokens matched first, then normalized ones in what remains.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/pre_tokenizer.h"

namespace dserve::engine {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A stretch of input: an added token (`token` >= 0) or text for the model (`token` == -1).
struct Segment {
  Span span;
  int32_t token = -1;
};

class AddedTokenMatcher {
 public:
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);
  ~AddedTokenMatcher();

  // Segments covering `text` in order (consumed whitespace belongs to no segment).
  std::vector<Segment> Split(std::string_view text) const;

 private:
  class Trie;
  // Splits the text spans of `segments` with one trie's tokens.
  void SplitWith(const Trie& trie, std::string_view text, std::vector<Segment>* segments) const;

  std::vector<AddedToken> tokens_;
  std::unique_ptr<Trie> raw_;         // normalized == false: matched on the input as given
  std::unique_ptr<Trie> normalized_;  // normalized == true
  std::unique_ptr<Regex> word_char_;  // for single_word
};

}  // namespace dserve::engine

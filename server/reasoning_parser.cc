// ReasoningParser: the think-block split of a streamed output (see reasoning_parser.h).
// Everything hinges on holding back exactly the suffixes that could still become a tag.
#include "server/reasoning_parser.h"

#include <algorithm>
#include <cstddef>

namespace dserve::server {
namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Length of the longest suffix of `text` that is a proper prefix of `tag`: those bytes may
// still turn out to be the tag once the next delta arrives.
size_t PartialTagSuffix(std::string_view text, std::string_view tag) {
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n) {
    if (tag.starts_with(text.substr(text.size() - n))) return n;
  }
  return 0;
}

}  // namespace

ReasoningParser::ReasoningParser(bool starts_in_reasoning)
    : starts_in_reasoning_(starts_in_reasoning) {}

ReasoningParser::Delta ReasoningParser::Push(std::string_view text) {
  Delta out;
  buffer_.append(text);
  Process(out);
  return out;
}

void ReasoningParser::Process(Delta& out) {
  if (state_ == State::kOpening) {
    size_t first = 0;
    while (first < buffer_.size() && IsSpace(buffer_[first])) ++first;
    std::string_view rest = std::string_view(buffer_).substr(first);
    // Only whitespace so far, or a possible start of "<think>": nothing is decided yet.
    if (rest.empty() || (rest.size() < kThinkOpen.size() && kThinkOpen.starts_with(rest))) return;
    if (rest.starts_with(kThinkOpen)) {
      buffer_.erase(0, first + kThinkOpen.size());
      state_ = State::kReasoning;
    } else {
      state_ = starts_in_reasoning_ ? State::kReasoning : State::kContent;
    }
  }
  if (state_ == State::kReasoning) {
    size_t close = buffer_.find(kThinkClose);
    if (close == std::string::npos) {
      size_t held = PartialTagSuffix(buffer_, kThinkClose);
      out.reasoning.append(buffer_, 0, buffer_.size() - held);
      buffer_.erase(0, buffer_.size() - held);
      return;
    }
    out.reasoning.append(buffer_, 0, close);
    buffer_.erase(0, close + kThinkClose.size());
    state_ = State::kContent;
  }
  // kContent: no tag means anything any more, so nothing is held.
  out.content.append(buffer_);
  buffer_.clear();
}

ReasoningParser::Delta ReasoningParser::Finish() {
  Delta out;
  std::string& section = in_reasoning() ? out.reasoning : out.content;
  section.append(buffer_);
  buffer_.clear();
  return out;
}

bool ReasoningParser::in_reasoning() const {
  return state_ == State::kReasoning || (state_ == State::kOpening && starts_in_reasoning_);
}

bool PromptOpensReasoning(std::string_view prompt) {
  while (!prompt.empty() && IsSpace(prompt.back())) prompt.remove_suffix(1);
  return prompt.ends_with(kThinkOpen);
}

}  // namespace dserve::server

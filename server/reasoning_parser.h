// ReasoningParser: splits a DeepSeek-R1 style output stream into `reasoning_content` (the text
// of the think block, up to "</think>") and `content` (the rest), one text delta at a time.
#pragma once

#include <string>
#include <string_view>

namespace dserve::server {

// The split depends only on the whole text, never on how the stream cut it into deltas: a
// suffix that might still become "<think>" or "</think>" is held back until the next delta (or
// Finish) decides it. Rules:
//  - At the start, a "<think>" after optional whitespace is dropped (with that whitespace) and
//    the parser is in the think block. This holds whether or not the prompt already opened one,
//    so a model that repeats the opener does not leak it into the reasoning.
//  - Otherwise the parser starts where the prompt left it: in the think block when
//    starts_in_reasoning, else in content for good (a later "</think>" is ordinary content).
//  - In the think block, "</think>" ends it. Tags are never emitted; the text after "</think>"
//    is content exactly as generated (R1's customary "\n\n" is kept, as vLLM does).
class ReasoningParser {
 public:
  // starts_in_reasoning: the rendered prompt already opened a think block (see
  // PromptOpensReasoning).
  explicit ReasoningParser(bool starts_in_reasoning);

  struct Delta {
    std::string reasoning;
    std::string content;
  };

  // Feeds the next text delta; returns what can be emitted now.
  Delta Push(std::string_view text);
  // End of stream: flushes whatever was held back, as the section it was in.
  Delta Finish();

  // Whether text emitted now would go to `reasoning` (also true before the first character
  // when starts_in_reasoning).
  bool in_reasoning() const;

 private:
  enum class State {
    kOpening,    // start of output: a "<think>" may still come after leading whitespace
    kReasoning,  // inside the think block, watching for "</think>"
    kContent,    // after the think block, or never in one: everything is content
  };

  // Consumes buffer_ as far as it is decided.
  void Process(Delta& out);

  const bool starts_in_reasoning_;
  State state_ = State::kOpening;
  std::string buffer_;  // text not yet assigned to a section
};

// Whether a rendered prompt leaves the model inside a think block: it ends with "<think>",
// possibly followed by whitespace (R1's newer templates and V3.1's thinking mode add "\n").
bool PromptOpensReasoning(std::string_view prompt);

}  // namespace dserve::server

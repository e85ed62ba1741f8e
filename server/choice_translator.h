// ChoiceTranslator: one choice's engine outputs -> ChoiceDeltas. Text runs through the R1
// reasoning split (chat) and the DeepSeek tool-call parser (when the request's tools are
// live); logprobs get their token text; the engine's finish reason becomes OpenAI's.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "engine/request.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/reasoning_parser.h"
#include "server/tool_call_parser.h"

namespace dserve::server {

struct TopLogprob {
  int32_t id = 0;
  std::string token;  // the token's text (invalid UTF-8 replaced by U+FFFD)
  std::string bytes;  // its raw bytes
  float logprob = 0;
};

struct TokenLogprob : TopLogprob {
  std::vector<TopLogprob> top;
};

// One choice's news in one event.
struct ChoiceDelta {
  int index = 0;
  std::string content;
  std::string reasoning;
  std::vector<ToolCallParser::Delta::CallDelta> tool_calls;
  std::vector<TokenLogprob> logprobs;  // one per token of this delta, when asked for
  int64_t num_tokens = 0;
  std::vector<int32_t> token_ids;  // the tokens this delta's text came from
  // Set on the choice's last delta: "stop", "length", "tool_calls", "abort" or "error".
  std::optional<std::string> finish_reason;
};

class ChoiceTranslator {
 public:
  struct Options {
    bool reasoning = false;            // split reasoning_content off (chat)
    bool starts_in_reasoning = false;  // the prompt opened a think block
    bool tools = false;                // parse tool calls out of the text
    bool logprobs = false;             // fill ChoiceDelta::logprobs (needs the tokenizer)
    std::string echo;                  // text to put before the first delta (completions echo)
  };
  ChoiceTranslator(int index, Options options, const engine::Tokenizer* tokenizer);

  // The delta for one engine output of this choice; the last one (finish set) flushes the
  // parsers and carries the finish reason.
  ChoiceDelta Translate(const engine::RequestOutput& out);
  bool finished() const { return finished_; }

 private:
  void Route(std::string_view content, ChoiceDelta& d);

  int index_;
  Options options_;
  const engine::Tokenizer* tokenizer_;
  std::unique_ptr<ReasoningParser> reasoning_;
  std::unique_ptr<ToolCallParser> tools_;
  bool finished_ = false;
};

// "stop" ("tool_calls" when the output called tools), "length", "abort", "error".
std::string_view FinishReasonName(engine::FinishReason reason, bool tool_calls);

// Token text for logprobs: the bytes if they are valid UTF-8, else with U+FFFD for each
// invalid sequence (a byte-level BPE token may hold part of a character).
std::string TokenText(std::string_view bytes);
// Whether TokenText(bytes) would return bytes unchanged (one pass, no allocation).
bool IsValidUtf8(std::string_view bytes);

}  // namespace dserve::server

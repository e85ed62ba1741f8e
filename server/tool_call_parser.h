// ToolCallParser: turns DeepSeek V3/R1/V3.1 tool-call markup in a streamed output into OpenAI
// tool calls (id, name, arguments) plus the ordinary content around them.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace dserve::server {

// The model writes (special tokens detokenised literally):
//   V3/R1: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n
//          ARGS\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>...<｜tool▁calls▁end｜>
//   V3.1:  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>
//          ...<｜tool▁calls▁end｜>
// The format is told per call: text before <｜tool▁sep｜> other than "function" is a V3.1 name;
// after "function", arguments starting with '{' or '[' mean V3.1 with a tool named "function".
// A call also ends at <｜tool▁calls▁end｜> or a new <｜tool▁call▁begin｜> when the model skips
// <｜tool▁call▁end｜>. <｜end▁of▁sentence｜> is dropped wherever it appears.

struct ToolCall {
  std::string id;  // "call_" + 24 random alphanumerics
  std::string name;
  std::string arguments;  // the JSON text as generated, trimmed (V3: without the ``` fences)
};

// The result depends only on the whole text, never on how the stream cut it into deltas:
// suffixes that might still become a marker, the closing fence or trailing whitespace of the
// arguments are held back until the next delta (or Finish) decides them. Content segments
// that are only whitespace next to a tool-call block (the "\n" between calls, "\n\n" before
// the block) are dropped; whitespace-only output with no block at all is kept.
class ToolCallParser {
 public:
  ToolCallParser();

  struct Delta {
    std::string content;  // ordinary text (everything outside the tool-call block)
    // Streaming pieces, OpenAI style: a new call's first piece carries index, id and name with
    // empty arguments; later pieces carry only index and argument text.
    struct CallDelta {
      int index;
      std::string id;
      std::string name;
      std::string arguments;
    };
    std::vector<CallDelta> calls;
  };

  // Feeds the next text delta; returns what can be emitted now.
  Delta Push(std::string_view text);
  // End of stream: flushes what was held back; an unterminated call is emitted with what it
  // has (name so far, arguments so far).
  Delta Finish();

  // Every call completed (or flushed by Finish) so far, in order; a call's entry appears once
  // its end marker has been seen.
  const std::vector<ToolCall>& calls() const { return calls_; }
  // Whether a call has started (its name may still be streaming): what makes finish_reason
  // "tool_calls". An empty <｜tool▁calls▁begin｜><｜tool▁calls▁end｜> block does not count.
  bool saw_tool_calls() const { return saw_tool_calls_; }

 private:
  enum class State {
    kContent,  // outside a block: content until <｜tool▁calls▁begin｜>
    kBlock,    // inside a block, between calls
    kCallHead,  // after <｜tool▁call▁begin｜>: the type (V3) or name (V3.1) until <｜tool▁sep｜>
    kAfterSep,  // after "function<｜tool▁sep｜>": a V3 name or V3.1 arguments?
    kName,      // V3 name, up to the end of its line
    kFence,     // V3 opening "```json" line
    kArgs,      // arguments, until the call's end marker
  };

  // Runs the state machine over buffer_ until it needs more text.
  void Process(Delta& out);
  // One step; false when buffer_ holds nothing decidable.
  bool Step(Delta& out);
  // Content text up to the first of `markers`; returns the marker found, or "" (then the
  // undecided rest stays in buffer_).
  std::string_view TakeContent(const std::vector<std::string_view>& markers, Delta& out);
  void StartCall(std::string name, Delta& out);
  // Streams the arguments decided so far (see UndecidedTail in the .cc).
  void EmitArguments(Delta& out);
  void AppendArguments(std::string_view fragment, Delta& out) const;
  // Ends the open call: final arguments, record it, and consume `marker` if it is the
  // call-end marker (other markers stay for kBlock).
  void EndCall(std::string_view marker, Delta& out);

  State state_ = State::kContent;
  std::string eos_pending_;  // a suffix that may become <｜end▁of▁sentence｜>
  std::string buffer_;       // text (EOS removed) not yet decided
  // Whether the current content segment has non-whitespace; until it does, its whitespace is
  // held so a blank segment next to a block can be dropped.
  bool segment_has_text_ = false;
  bool saw_block_ = false;       // <｜tool▁calls▁begin｜> seen
  bool saw_tool_calls_ = false;  // a call started

  // The open call.
  ToolCall call_;
  bool fenced_ = false;      // V3: arguments sit in ```json fences
  std::string args_raw_;     // argument text as generated so far
  size_t args_emitted_ = 0;  // bytes of trimmed arguments already emitted
  std::vector<ToolCall> calls_;
};

// Non-streaming: the content text and the calls of a whole output.
struct ParsedToolCalls {
  std::string content;
  std::vector<ToolCall> calls;
};
ParsedToolCalls ParseToolCalls(std::string_view text);

}  // namespace dserve::server

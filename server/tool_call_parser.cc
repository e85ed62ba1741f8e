// ToolCallParser: the state machine over DeepSeek tool-call markup (see tool_call_parser.h).
// Every step either decides a prefix of the buffered text or waits for more of it.
#include "server/tool_call_parser.h"

#include <algorithm>
#include <random>
#include <utility>

namespace dserve::server {
namespace {

// "｜" is U+FF5C FULLWIDTH VERTICAL LINE, "▁" is U+2581, as in the tokenizer's special tokens.
constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kSep = "<｜tool▁sep｜>";
constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kFence = "```";

using Markers = std::vector<std::string_view>;

// Markers that end a call's arguments (the last two only when the model skipped call-end).
const Markers& CallEnders() {
  static const Markers kEnders = {kCallEnd, kCallsEnd, kCallBegin};
  return kEnders;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool HasNonSpace(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) { return !IsSpace(c); });
}

size_t FirstNonSpace(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && IsSpace(text[i])) ++i;
  return i;
}

std::string_view TrimRight(std::string_view text) {
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

std::string_view Trim(std::string_view text) { return TrimRight(text.substr(FirstNonSpace(text))); }

struct Found {
  size_t pos = std::string::npos;
  std::string_view marker;  // empty when none was found
};

Found FindFirst(std::string_view text, const Markers& markers) {
  Found found;
  for (std::string_view marker : markers) {
    size_t pos = text.find(marker);
    if (pos < found.pos) found = {pos, marker};
  }
  return found;
}

// Length of the longest suffix of `text` that is a proper prefix of one of `markers`: those
// bytes may still turn into a marker once the next delta arrives.
size_t PartialMarkerSuffix(std::string_view text, const Markers& markers) {
  size_t longest = 0;
  for (std::string_view marker : markers) {
    for (size_t n = std::min(text.size(), marker.size() - 1); n > longest; --n) {
      if (marker.starts_with(text.substr(text.size() - n))) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

// The arguments as reported: trimmed, and for V3 without the closing ``` fence (or the part
// of it a cut-off stream got to).
std::string FinalArguments(std::string_view raw, bool fenced) {
  std::string_view args = Trim(raw);
  if (fenced) {
    size_t ticks = 0;
    while (ticks < kFence.size() && ticks < args.size() && args[args.size() - 1 - ticks] == '`') {
      ++ticks;
    }
    if (ticks > 0) args = TrimRight(args.substr(0, args.size() - ticks));
  }
  return std::string(args);
}

// Length of the suffix of `raw` that FinalArguments could still cut off, whatever follows:
// trailing whitespace, and when fenced up to three backticks with the whitespace around them.
// Streaming emits only what lies before it, so the fragments add up to FinalArguments.
size_t UndecidedTail(std::string_view raw, bool fenced) {
  size_t ws_end = raw.size() - TrimRight(raw).size();
  if (!fenced) return ws_end;
  size_t i = raw.size() - ws_end;
  size_t ticks = 0;
  while (i > 0 && raw[i - 1] == '`' && ticks < kFence.size()) {
    --i;
    ++ticks;
  }
  if (ticks == 0) return ws_end;
  while (i > 0 && IsSpace(raw[i - 1])) --i;
  return raw.size() - i;
}

std::string NewCallId() {
  static constexpr char kAlphanumerics[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  // Per thread so concurrent streams never share (or lock) a generator.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, sizeof(kAlphanumerics) - 2);
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id.push_back(kAlphanumerics[pick(rng)]);
  return id;
}

}  // namespace

ToolCallParser::ToolCallParser() = default;

ToolCallParser::Delta ToolCallParser::Push(std::string_view text) {
  // Drop every <｜end▁of▁sentence｜> first, so the state machine never sees one (even inside
  // arguments), holding back a suffix that may still become one.
  std::string input = std::move(eos_pending_);
  eos_pending_.clear();
  input.append(text);
  std::string_view rest = input;
  for (size_t pos; (pos = rest.find(kEos)) != std::string_view::npos;) {
    buffer_.append(rest.substr(0, pos));
    rest.remove_prefix(pos + kEos.size());
  }
  size_t held = PartialMarkerSuffix(rest, {kEos});
  buffer_.append(rest.substr(0, rest.size() - held));
  eos_pending_.assign(rest.substr(rest.size() - held));

  Delta out;
  Process(out);
  return out;
}

ToolCallParser::Delta ToolCallParser::Finish() {
  buffer_.append(eos_pending_);  // a partial EOS marker at the very end is just text
  eos_pending_.clear();
  Delta out;
  Process(out);
  switch (state_) {
    case State::kContent:
    case State::kBlock:
      // Whitespace-only output with no block at all is still the answer; next to a block it
      // is dropped like any blank segment.
      if (segment_has_text_ || HasNonSpace(buffer_) || (state_ == State::kContent && !saw_block_)) {
        out.content.append(buffer_);
      }
      break;
    case State::kCallHead:
    case State::kName:
      StartCall(std::string(Trim(buffer_)), out);
      EndCall("", out);
      break;
    case State::kAfterSep:
      StartCall("", out);  // "function<｜tool▁sep｜>" and nothing after: the name never came
      EndCall("", out);
      break;
    case State::kFence:
      EndCall("", out);  // a partial fence line is markup, not arguments
      break;
    case State::kArgs:
      args_raw_.append(buffer_);
      EndCall("", out);
      break;
  }
  buffer_.clear();
  state_ = State::kContent;
  segment_has_text_ = false;
  return out;
}

void ToolCallParser::Process(Delta& out) {
  while (Step(out)) {
  }
}

bool ToolCallParser::Step(Delta& out) {
  switch (state_) {
    case State::kContent: {
      if (TakeContent({kCallsBegin}, out).empty()) return false;
      saw_block_ = true;
      state_ = State::kBlock;
      return true;
    }
    case State::kBlock: {
      std::string_view marker = TakeContent({kCallBegin, kCallsEnd}, out);
      if (marker.empty()) return false;
      state_ = marker == kCallBegin ? State::kCallHead : State::kContent;
      return true;
    }
    case State::kCallHead: {
      Markers markers = CallEnders();
      markers.push_back(kSep);
      Found found = FindFirst(buffer_, markers);
      if (found.marker.empty()) return false;
      std::string head(Trim(std::string_view(buffer_).substr(0, found.pos)));
      if (found.marker != kSep) {  // a call with no separator: all it has is a name
        buffer_.erase(0, found.pos);
        StartCall(std::move(head), out);
        EndCall(found.marker, out);
        return true;
      }
      buffer_.erase(0, found.pos + kSep.size());
      if (head == "function") {
        state_ = State::kAfterSep;
      } else {
        StartCall(std::move(head), out);
        fenced_ = false;
        state_ = State::kArgs;
      }
      return true;
    }
    case State::kAfterSep: {
      size_t first = FirstNonSpace(buffer_);
      if (first == buffer_.size()) return false;
      if (buffer_[first] == '{' || buffer_[first] == '[') {  // V3.1 arguments
        StartCall("function", out);
        fenced_ = false;
        state_ = State::kArgs;
      } else {
        state_ = State::kName;
      }
      return true;
    }
    case State::kName: {
      Found found = FindFirst(buffer_, CallEnders());
      size_t newline = buffer_.find('\n');
      if (newline < found.pos) {
        StartCall(std::string(Trim(std::string_view(buffer_).substr(0, newline))), out);
        buffer_.erase(0, newline + 1);
        fenced_ = true;
        state_ = State::kFence;
        return true;
      }
      if (found.marker.empty()) return false;
      StartCall(std::string(Trim(std::string_view(buffer_).substr(0, found.pos))), out);
      buffer_.erase(0, found.pos);
      EndCall(found.marker, out);
      return true;
    }
    case State::kFence: {
      // Whitespace before the fence is dropped: the arguments are trimmed anyway.
      buffer_.erase(0, FirstNonSpace(buffer_));
      if (buffer_.empty()) return false;
      if (!buffer_.starts_with(kFence)) {
        if (kFence.starts_with(buffer_)) return false;
        state_ = State::kArgs;  // no fence: the arguments start right here
        return true;
      }
      Found found = FindFirst(buffer_, CallEnders());
      size_t newline = buffer_.find('\n');
      if (newline < found.pos) {  // the "```json" line is markup
        buffer_.erase(0, newline + 1);
        state_ = State::kArgs;
        return true;
      }
      if (found.marker.empty()) return false;
      buffer_.erase(0, found.pos);
      EndCall(found.marker, out);
      return true;
    }
    case State::kArgs: {
      Found found = FindFirst(buffer_, CallEnders());
      if (found.marker.empty()) {
        size_t held = PartialMarkerSuffix(buffer_, CallEnders());
        args_raw_.append(buffer_, 0, buffer_.size() - held);
        buffer_.erase(0, buffer_.size() - held);
        EmitArguments(out);
        return false;
      }
      args_raw_.append(buffer_, 0, found.pos);
      buffer_.erase(0, found.pos);
      EndCall(found.marker, out);
      return true;
    }
  }
  return false;
}

std::string_view ToolCallParser::TakeContent(const Markers& markers, Delta& out) {
  Found found = FindFirst(buffer_, markers);
  size_t end =
      found.marker.empty() ? buffer_.size() - PartialMarkerSuffix(buffer_, markers) : found.pos;
  std::string_view segment = std::string_view(buffer_).substr(0, end);
  if (!segment_has_text_ && HasNonSpace(segment)) segment_has_text_ = true;
  if (segment_has_text_) {
    out.content.append(segment);
    buffer_.erase(0, end);
  } else if (!found.marker.empty()) {
    buffer_.erase(0, end);  // a blank segment next to the block: dropped
  }
  // else: blank so far; hold it until the segment proves to have text or ends at a marker.
  if (!found.marker.empty()) {
    buffer_.erase(0, found.marker.size());
    segment_has_text_ = false;
  }
  return found.marker;
}

void ToolCallParser::StartCall(std::string name, Delta& out) {
  saw_tool_calls_ = true;
  call_ = ToolCall{NewCallId(), std::move(name), ""};
  args_raw_.clear();
  args_emitted_ = 0;
  out.calls.push_back({static_cast<int>(calls_.size()), call_.id, call_.name, ""});
}

void ToolCallParser::EmitArguments(Delta& out) {
  size_t start = FirstNonSpace(args_raw_);
  size_t end = args_raw_.size() - UndecidedTail(args_raw_, fenced_);
  size_t from = start + args_emitted_;
  if (start == args_raw_.size() || end <= from) return;
  AppendArguments(std::string_view(args_raw_).substr(from, end - from), out);
  args_emitted_ += end - from;
}

void ToolCallParser::AppendArguments(std::string_view fragment, Delta& out) const {
  if (fragment.empty()) return;
  int index = static_cast<int>(calls_.size());
  if (!out.calls.empty() && out.calls.back().index == index && out.calls.back().id.empty()) {
    out.calls.back().arguments.append(fragment);  // one piece per call per delta
  } else {
    out.calls.push_back({index, "", "", std::string(fragment)});
  }
}

void ToolCallParser::EndCall(std::string_view marker, Delta& out) {
  call_.arguments = FinalArguments(args_raw_, fenced_);
  // What was streamed is a prefix of the final arguments (UndecidedTail sees to it).
  AppendArguments(std::string_view(call_.arguments).substr(args_emitted_), out);
  calls_.push_back(std::move(call_));
  call_ = ToolCall{};
  args_raw_.clear();
  args_emitted_ = 0;
  fenced_ = false;
  // Only call-end belongs to this call; calls-end or a new call-begin is kBlock's to read.
  if (marker == kCallEnd) buffer_.erase(0, kCallEnd.size());
  state_ = State::kBlock;
  segment_has_text_ = false;
}

ParsedToolCalls ParseToolCalls(std::string_view text) {
  ToolCallParser parser;
  ParsedToolCalls parsed;
  parsed.content = parser.Push(text).content;
  parsed.content += parser.Finish().content;
  parsed.calls = parser.calls();
  return parsed;
}

}  // namespace dserve::server

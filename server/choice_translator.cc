#include "server/choice_translator.h"

namespace dserve::server {

std::string_view FinishReasonName(engine::FinishReason reason, bool tool_calls) {
  switch (reason) {
    case engine::FinishReason::kStop:
      return tool_calls ? "tool_calls" : "stop";
    case engine::FinishReason::kLength:
      return "length";
    case engine::FinishReason::kCancelled:
      return "abort";
    case engine::FinishReason::kError:
    case engine::FinishReason::kNone:
      break;
  }
  return "error";
}

namespace {

// Length of the well-formed UTF-8 character at bytes[i], or 0 (overlong forms, surrogates and
// values past U+10FFFF are not well formed).
int CharLength(std::string_view bytes, size_t i) {
  const auto c = static_cast<unsigned char>(bytes[i]);
  const int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len <= 1) return len;
  if (i + len > bytes.size()) return 0;
  uint32_t cp = c & (0xFF >> (len + 1));
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(bytes[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  return cp >= kMin[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF) ? len : 0;
}

}  // namespace

std::string TokenText(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    if (const int len = CharLength(bytes, i)) {
      out.append(bytes.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

bool IsValidUtf8(std::string_view bytes) {
  for (size_t i = 0; i < bytes.size();) {
    const int len = CharLength(bytes, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

ChoiceTranslator::ChoiceTranslator(int index, Options options, const engine::Tokenizer* tokenizer)
    : index_(index), options_(std::move(options)), tokenizer_(tokenizer) {
  if (options_.reasoning) {
    reasoning_ = std::make_unique<ReasoningParser>(options_.starts_in_reasoning);
  }
  if (options_.tools) tools_ = std::make_unique<ToolCallParser>();
}

void ChoiceTranslator::Route(std::string_view content, ChoiceDelta& d) {
  if (!tools_) {
    d.content += content;
    return;
  }
  ToolCallParser::Delta t = tools_->Push(content);
  d.content += t.content;
  for (auto& call : t.calls) d.tool_calls.push_back(std::move(call));
}

ChoiceDelta ChoiceTranslator::Translate(const engine::RequestOutput& out) {
  ChoiceDelta d;
  d.index = index_;
  d.num_tokens = static_cast<int64_t>(out.tokens.size());
  d.token_ids = out.tokens;
  std::string text = out.text;
  if (!options_.echo.empty()) {
    text = options_.echo + text;
    options_.echo.clear();
  }
  const bool finishing = out.finish != engine::FinishReason::kNone;
  if (reasoning_) {
    ReasoningParser::Delta r = reasoning_->Push(text);
    d.reasoning += r.reasoning;
    Route(r.content, d);
    if (finishing) {
      ReasoningParser::Delta tail = reasoning_->Finish();
      d.reasoning += tail.reasoning;
      Route(tail.content, d);
    }
  } else {
    Route(text, d);
  }
  if (finishing && tools_) {
    ToolCallParser::Delta t = tools_->Finish();
    d.content += t.content;
    for (auto& call : t.calls) d.tool_calls.push_back(std::move(call));
  }
  if (options_.logprobs && tokenizer_) {
    for (const engine::SampledToken& s : out.logprobs) {
      auto entry = [&](int32_t id, float logprob) {
        TopLogprob e;
        e.id = id;
        e.bytes = std::string(tokenizer_->TokenBytes(id));
        e.token = TokenText(e.bytes);
        e.logprob = logprob;
        return e;
      };
      TokenLogprob lp;
      static_cast<TopLogprob&>(lp) = entry(s.token, s.logprob);
      for (const engine::TokenLogprob& t : s.top) lp.top.push_back(entry(t.token, t.logprob));
      d.logprobs.push_back(std::move(lp));
    }
  }
  if (finishing) {
    finished_ = true;
    d.finish_reason = std::string(FinishReasonName(out.finish, tools_ && tools_->saw_tool_calls()));
  }
  return d;
}

}  // namespace dserve::server
